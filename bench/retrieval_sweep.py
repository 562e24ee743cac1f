"""The retrieval sweep behind the defaults: BM25 analysis x dense share, over a built index.

The dense lists come from the index's stored vectors (the questions are embedded once); BM25 is rebuilt
in memory for each analysis:
- `surface`: surface forms of the content words (the analysis before 2026-11-26)
- `surface-pairs`: the same plus adjacent-word pairs
- `current`: `rag.japanese` as it is (dictionary forms for verbs and adjectives, plus pairs)
Fusion and the dense slot are the retriever's own (`convex`, `keep_dense_best`). Prints article
R@1/5/10 for each analysis and dense share. It reads a folder store's files directly: the analyses it
compares live below the store seam.

    .venv/bin/python bench/retrieval_sweep.py ../shared/eval/jsquad/valid-v1.1.json .cache/eval/valid-v1.1-<key>
    .venv/bin/python bench/retrieval_sweep.py ../shared/eval/allforces/dev.jsonl DIR --weights 0.3 --analyses current
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag import parts  # noqa: E402
from rag.datasets import detect_format, load_jsonl, load_squad  # noqa: E402
from rag.index.folder import DENSE, STORE, live_generation  # noqa: E402
from rag.index.terms import BM25, TermCounts  # noqa: E402
from rag.japanese import (DROPPED_POS, POS1, QUESTION_WORDS, bm25_document_terms, normalize, tagged, word_fields,  # noqa: E402
                          tokenize, with_bigrams)
from rag.question import query_for  # noqa: E402
from rag.retrieval import convex, keep_dense_best  # noqa: E402
from rag.settings import Settings  # noqa: E402

DEPTH = 100


def surface_words(text: str) -> list[str]:
    return [w.surface for w in tagged(normalize(text)) if word_fields(w)[POS1] not in DROPPED_POS and w.surface.strip()]


def surface_query(question: str) -> list[str]:
    return [t for t in surface_words(question) if t not in QUESTION_WORDS]


def surface_pairs_query(question: str) -> list[str]:
    words = surface_words(question)
    return surface_query(question) + [a + b for a, b in zip(words, words[1:])
                                      if a not in QUESTION_WORDS and b not in QUESTION_WORDS]


ANALYSES = {  # name: (document terms, question terms)
    "surface": (surface_words, surface_query),
    "surface-pairs": (lambda text: with_bigrams(surface_words(text)), surface_pairs_query),
    "current": (bm25_document_terms, lambda question: list(query_for(question, tokenize(question)).terms)),
}


def main() -> None:
    import faiss

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, help="SQuAD .json or the project's .jsonl questions")
    parser.add_argument("index", type=Path, help="an index of the dataset's documents")
    parser.add_argument("--weights", default="0.2,0.3,0.4", help="dense shares to try (comma separated)")
    parser.add_argument("--analyses", default=",".join(ANALYSES), help="BM25 analyses to try")
    parser.add_argument("--dense-slot", type=int, default=Settings().dense_slot)
    args = parser.parse_args()

    generation = live_generation(args.index)
    db = sqlite3.connect(generation / STORE)
    texts = dict(db.execute("SELECT text_id, text FROM texts"))
    article_of: dict[int, str] = {}
    for article_id, text_id in db.execute("SELECT article_id, text_id FROM chunks ORDER BY chunk_id"):
        article_of.setdefault(text_id, article_id)
    titles = dict(db.execute("SELECT article_id, title FROM articles"))
    # text ids are the rows of the dense index and of BM25; documents as the index builds them
    documents = [titles[article_of[t]] + "\n" + texts[t] for t in range(len(texts))]
    questions = load_squad(args.dataset)[1] if detect_format(args.dataset) == "squad" else load_jsonl(args.dataset)
    questions = [q for q in questions if q.gold]

    settings = Settings()
    embedder = parts.embedder(settings)
    scores, rows = faiss.read_index(str(generation / DENSE)).search(
        embedder.encode_queries([q.question for q in questions]), DEPTH)
    dense_lists = [{int(r): float(s) for r, s in zip(row, score) if r >= 0} for row, score in zip(rows, scores)]

    for name in args.analyses.split(","):
        document_terms, question_terms = ANALYSES[name]
        started = time.perf_counter()
        bm25 = BM25(TermCounts.of([document_terms(d) for d in documents]), settings.bm25_k1, settings.bm25_b)
        bm25_lists = []
        for q in questions:
            found = bm25.scores(question_terms(q.question))
            bm25_lists.append({int(i): float(found[i]) for i in np.argsort(-found)[:DEPTH] if found[i] > 0})
        for weight in (float(w) for w in args.weights.split(",")):
            hits = np.zeros(3)
            for q, dense, lexical in zip(questions, dense_lists, bm25_lists):
                fused = convex([dense, lexical], [weight, 1 - weight])
                ranked = keep_dense_best(sorted(fused, key=lambda t: -fused[t])[:10], dense, args.dense_slot)
                articles = [article_of[t] for t in ranked]
                hits += [bool(set(q.gold) & set(articles[:k])) for k in (1, 5, 10)]
            r1, r5, r10 = hits / len(questions)
            print(f"{name:14s} dense {weight:.2f}  R@1 {r1:.4f}  R@5 {r5:.4f}  R@10 {r10:.4f}  "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
