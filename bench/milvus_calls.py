"""Where an ask spends its time on the Milvus store: each request of the read side, timed apart.

    python bench/milvus_calls.py --folder DIR [--dense-index FLAT|HNSW] [--questions 50]

Fills a `milvus-lite server` (started on 127.0.0.1, data in a temporary folder) from the folder index's live
generation as bench/milvus.py does, then runs the allforces dev questions through the Milvus store's searches
and lookups, and prints the p50 and p95 of each: the IDF lookup, the dense search, the term search, the
passage rows of the hits.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from milvus import COLLECTION, fill_from_folder, start_milvus  # noqa: E402
from run import percentiles  # noqa: E402

from rag import parts  # noqa: E402
from rag.question import analyse  # noqa: E402
from rag.settings import Settings  # noqa: E402
from rag.types import Filters  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--dense-index", default="FLAT")
    parser.add_argument("--questions", type=int, default=50)
    parser.add_argument("--depth", type=int, default=100)
    args = parser.parse_args()
    settings = Settings()
    questions = [json.loads(line)["question"] for line in
                 (settings.shared / "eval" / "allforces" / "dev.jsonl").read_text(encoding="utf-8").splitlines()
                 if line.strip()][: args.questions]
    with tempfile.TemporaryDirectory(prefix="rag-milvus-calls-") as tmp:
        server, uri = start_milvus(Path(tmp))
        try:
            settings = Settings(store="milvus", milvus_uri=uri, milvus_collection=COLLECTION,
                                milvus_dense_index=args.dense_index)
            filled = fill_from_folder(args.folder, parts.store(settings))
            print(f"filled: {filled}", flush=True)
            embedder = parts.embedder(settings.model_copy(update={"embedding_backend": "onnx"}))
            started = time.perf_counter()
            index = parts.open_store(settings, embedder)
            print(f"opened in {time.perf_counter() - started:.1f} s", flush=True)
            times: dict[str, list[float]] = {"idf": [], "dense": [], "terms": [], "passages": []}

            def timed(part: str, call):
                begun = time.perf_counter()
                value = call()
                times[part].append((time.perf_counter() - begun) * 1000)
                return value

            for question in questions:
                index._idf.clear()
                index._text_rows.clear()
                vector = embedder.encode_queries([question])[0]
                analysed = timed("idf", lambda: analyse(question, index.term_weight))
                dense = timed("dense", lambda: index.dense_search(vector, args.depth, Filters()))
                terms = timed("terms", lambda: index.term_search(analysed.query.terms, args.depth, Filters()))
                index._text_rows.clear()
                index._article_rows.clear()
                top = list(dict.fromkeys([*list(dense)[:10], *list(terms)[:10]]))
                timed("passages", lambda: index.passages(top, Filters()))
            for part, values in times.items():
                print(f"{part:9s} p50 {statistics.median(values):7.1f} ms  p95 {percentiles(values)['p95']} ms")
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
