"""The retrieval sweep behind the defaults: BM25 analyses x dense share x fusion, over a built index.

    python bench/retrieval_sweep.py DATASET INDEX_DIR [WEIGHTS] [VARIANTS]
    e.g. python bench/retrieval_sweep.py ../shared/eval/jsquad/valid-v1.1.json .cache/eval/valid-v1.1-<key> 0.2,0.3 current
         python bench/retrieval_sweep.py ../shared/eval/allforces/dev.jsonl indexes/allforces 0.3 current,surface
Dense lists come from the index's vectors (queries embedded once, cached in /tmp); BM25 is rebuilt in
memory per analysis: surface (the old default), lemma (UniDic lemma for verbs/adjectives), bigram,
lemma-bigram, current (rag.japanese as it is). FUSION=z uses z-scores instead of min-max;
RESCUE=4 moves the dense list's best passage to rank 5 when it is not in the first four.
Prints article R@1/5/10 per variant and weight.
"""
import glob, sqlite3, sys, os, time
from collections import defaultdict
from pathlib import Path
import numpy as np, faiss, bm25s
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from rag.datasets import load_squad
from rag.japanese import _tagger, normalize, DROPPED_POS, QUESTION_WORDS
from rag.retrieval import convex

data = Path(sys.argv[1]); cache = sys.argv[2]; FUSION = os.environ.get("FUSION", "minmax")
gen = sorted(glob.glob(f"{cache}/gen-*"))[-1]
db = sqlite3.connect(f"{gen}/chunks.sqlite")
texts = dict(db.execute("select text_id, text from texts"))
art_of_text = {}
for aid, tid in db.execute("select article_id, text_id from chunks order by chunk_id"):
    art_of_text.setdefault(tid, aid)
titles = dict(db.execute("select article_id, title from articles"))
ids = sorted(texts)
assert ids == list(range(len(ids))) or ids == list(range(1, len(ids)+1)), ids[:3]
off = ids[0]
if data.suffix == ".jsonl":
    from rag.datasets import load_jsonl
    questions = [q for q in load_jsonl(data) if q.gold]
else:
    loaded, questions = load_squad(data)
dense = faiss.read_index(f"{gen}/dense.faiss")
qfile = f"/tmp/retrieval-sweep-{data.stem}-{Path(cache).name}-q.npy"
if os.path.exists(qfile): Q = np.load(qfile)
else:
    from rag.embeddings import create_embedder
    from rag.settings import Settings
    e = create_embedder(Settings().embedding_backend, Settings().model, query_prompt="query: ", passage_prompt="passage: ")
    Q = e.encode_queries([q.question for q in questions]); np.save(qfile, Q)
D, I = dense.search(Q, 100)
docs = [titles[art_of_text[t]] + "\n" + texts[t] for t in ids]

def surface(text):
    return [w.surface for w in _tagger()(normalize(text)) if w.feature.pos1 not in DROPPED_POS and w.surface.strip()]
def lemma(text):
    out = []
    for w in _tagger()(normalize(text)):
        if w.feature.pos1 in DROPPED_POS or not w.surface.strip(): continue
        l = w.feature.lemma if w.feature.pos1 in ("動詞", "形容詞", "形容動詞") and w.feature.lemma else w.surface
        out.append(normalize(l.split("-")[0]))
    return out
def bigram(text):
    t = surface(text)
    return t + [a + b for a, b in zip(t, t[1:])]
def qstrip(toks): return [t for t in toks if t not in QUESTION_WORDS]
def qbigram(text):
    t = surface(text)
    keep = [x for x in t if x not in QUESTION_WORDS]
    return keep + [a + b for a, b in zip(t, t[1:]) if a not in QUESTION_WORDS and b not in QUESTION_WORDS]

def lemma_bigram(text):
    t = lemma(text)
    return t + [a + b for a, b in zip(t, t[1:])]
def q_lemma_bigram(text):
    t = lemma(text)
    keep = [x for x in t if x not in QUESTION_WORDS]
    return keep + [a + b for a, b in zip(t, t[1:]) if a not in QUESTION_WORDS and b not in QUESTION_WORDS]
from rag.japanese import bm25_document_terms, bm25_query_terms
variants = {"current": (bm25_document_terms, lambda q: list(bm25_query_terms(q))), "lemma-bigram": (lemma_bigram, q_lemma_bigram), "surface": (surface, lambda q: qstrip(surface(q))), "lemma": (lemma, lambda q: qstrip(lemma(q))),
            "bigram": (bigram, qbigram)}
gold = [set(q.gold) for q in questions]
weights = [float(x) for x in sys.argv[3].split(",")] if len(sys.argv) > 3 else [0.0, 0.2, 0.3, 0.4, 0.5]
for name in (sys.argv[4].split(",") if len(sys.argv) > 4 else variants):
    doc_tok, q_tok = variants[name]
    t0 = time.time()
    bm = bm25s.BM25(k1=0.9, b=0.4); bm.index([doc_tok(d) for d in docs], show_progress=False)
    bm_lists = []
    for q in questions:
        toks = [t for t in q_tok(q.question) if t in bm.vocab_dict]
        s = bm.get_scores(toks) if toks else np.zeros(len(ids))
        top = np.argsort(-s)[:100]
        bm_lists.append({int(i): float(s[i]) for i in top if s[i] > 0})
    for w in weights:
        r1 = r5 = r10 = 0
        for qi, q in enumerate(questions):
            dl = {int(i) - off + off: float(s) for i, s in zip(I[qi], D[qi]) if i >= 0}
            if FUSION == "z":
                fused = defaultdict(float)
                for lst, wt in ((dl, w), (bm_lists[qi], 1 - w)):
                    if not lst: continue
                    v = np.array(list(lst.values())); mu, sd = v.mean(), v.std() or 1.0
                    floor = (v.min() - mu) / sd
                    for d_, x in lst.items(): fused[d_] += wt * ((x - mu) / sd - floor)
            else:
                fused = convex([dl, bm_lists[qi]], [w, 1 - w]) if w > 0 else bm_lists[qi]
            order = sorted(fused, key=lambda d: -fused[d])[:10]
            if os.environ.get("RESCUE"):
                r = int(os.environ["RESCUE"])
                best_dense = [d_ for d_ in sorted(dl, key=lambda d_: -dl[d_]) if d_ not in order[:r]][:1]
                order = (order[:r] + best_dense + [d_ for d_ in order[r:] if d_ not in best_dense])[:10]
            arts = [art_of_text[ids[d]] for d in order]
            g = gold[qi]
            r1 += bool(g & set(arts[:1])); r5 += bool(g & set(arts[:5])); r10 += bool(g & set(arts[:10]))
        n = len(questions)
        print(f"{name:8s} w={w:.2f} R@1 {r1/n:.4f} R@5 {r5/n:.4f} R@10 {r10/n:.4f}  ({time.time()-t0:.0f}s)", flush=True)
