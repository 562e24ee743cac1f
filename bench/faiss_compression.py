"""Smaller FAISS indexes measured against the exact flat one: memory, search time and recall cost.

Reads the vectors of a built index (the flat inner-product index `rag index` writes), rebuilds them as
float16 and 8-bit scalar-quantised indexes, and searches all three with real questions: the allforces
dev questions plus every article title of the index, encoded as questions. Reports the index size,
single-question search p50, the share of the flat top-k each variant finds (neighbour recall), and
how often a title finds its own article in the top 10. Nothing is changed in the index. Indexes store
float16 since 2026-11-27 (`DENSE_STORAGE`): measure an older, float32 index for an exact flat baseline.

    .venv/bin/python bench/faiss_compression.py --index /path/to/full/index
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.embeddings import create_embedder  # noqa: E402
from rag.index.folder import DENSE, MANIFEST, STORE, live_generation  # noqa: E402
from rag.index.manifest import Manifest  # noqa: E402

DEPTHS = (10, 100)


def variants(vectors: np.ndarray):
    import faiss

    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    yield "flat float32", flat
    for name, kind in (("float16", faiss.ScalarQuantizer.QT_fp16), ("SQ8 (8-bit scalar)", faiss.ScalarQuantizer.QT_8bit)):
        index = faiss.IndexScalarQuantizer(vectors.shape[1], kind, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.add(vectors)
        yield name, index


def main() -> None:
    import faiss

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True, help="a built index folder")
    parser.add_argument("--dataset", type=Path,
                        default=Path(os.environ.get("RAG_SHARED", ROOT.parent / "shared")) / "eval/allforces/dev.jsonl")
    parser.add_argument("--model", default=str(ROOT / "models" / "multilingual-e5-small"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    generation = live_generation(args.index)
    backend = Manifest.read(generation / MANIFEST).model.backend
    stored = faiss.read_index(str(generation / DENSE))
    vectors = stored.reconstruct_n(0, stored.ntotal)
    db = sqlite3.connect(generation / STORE)
    articles_of: dict[int, set[str]] = {}
    for text_id, article_id in db.execute("SELECT text_id, article_id FROM chunks"):
        articles_of.setdefault(text_id, set()).add(article_id)
    titled = list(db.execute("SELECT article_id, title FROM articles ORDER BY article_id"))
    questions = [json.loads(line)["question"] for line in args.dataset.read_text(encoding="utf-8").splitlines()
                 if line.strip()]
    embedder = create_embedder(backend, args.model, query_prompt="query: ",
                               passage_prompt="passage: ")
    queries = embedder.encode_queries(questions + [title for _, title in titled])
    print(f"{stored.ntotal} vectors of {args.index}; {len(queries)} questions ({len(questions)} dev + "
          f"{len(titled)} titles)", file=sys.stderr)

    rows, exact = [], None
    for name, index in variants(vectors):
        _, found = index.search(queries, max(DEPTHS))
        exact = found if exact is None else exact
        times = []
        for vector in queries[:300]:
            started = time.perf_counter()
            index.search(vector[None, :], max(DEPTHS))
            times.append((time.perf_counter() - started) * 1000)
        title_rows = found[len(questions):]
        rows.append({
            "index": name,
            "bytes": int(faiss.serialize_index(index).nbytes),
            "search_p50_ms": round(statistics.median(times), 2),
            **{f"neighbour_recall@{k}": round(float(np.mean(
                [len(set(f[:k]) & set(e[:k])) / k for f, e in zip(found, exact)])), 4) for k in DEPTHS},
            "title_finds_its_article@10": round(float(np.mean(
                [any(article in articles_of.get(int(t), ()) for t in row[:10])
                 for (article, _), row in zip(titled, title_rows)])), 4),
        })
        print(json.dumps(rows[-1]), file=sys.stderr)

    stamp = datetime.now(timezone.utc)
    lines = [f"# FAISS index compression ({stamp:%Y-%m-%d})", "",
             f"`.venv/bin/python bench/faiss_compression.py --index {args.index}`: {stored.ntotal} vectors "
             f"(dim {stored.d}), {len(queries)} questions ({len(questions)} allforces dev + {len(titled)} article "
             f"titles), {os.cpu_count()} cores.", "",
             "| index | size MB | search p50 ms (one question, top 100) | neighbour recall@10 | neighbour recall@100 "
             "| title finds its article@10 |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['index']} | {r['bytes'] / 1e6:.1f} | {r['search_p50_ms']} | {r['neighbour_recall@10']} | "
              f"{r['neighbour_recall@100']} | {r['title_finds_its_article@10']} |" for r in rows]
    path = args.out / f"{stamp:%Y-%m-%d}-faiss.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
