"""The steps of a build before its first answer, timed apart: reading the corpus, loading the model, chunking,
and the BM25 analysis of every passage (what the terms-only generation needs; no embedding).

`python bench/build_steps.py [--corpus DIR]`; prints seconds per step and the passage count.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import machine  # noqa: E402
from rag import parts  # noqa: E402
from rag.chunking import Chunker  # noqa: E402
from rag.japanese import tokenize  # noqa: E402
from rag.settings import Settings  # noqa: E402


def main() -> None:
    defaults = Settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=defaults.shared / "corpus" / "allforces")
    args = parser.parse_args()
    settings = Settings(corpus=args.corpus)
    steps: dict[str, float] = {}

    started = time.perf_counter()
    loaded = parts.corpus(settings)
    steps["read the corpus"] = time.perf_counter() - started

    started = time.perf_counter()
    embedder = parts.embedder(settings)
    steps["load the model"] = time.perf_counter() - started

    started = time.perf_counter()
    chunker = Chunker(parts.chunker_config(settings), embedder.count_tokens)
    documents: dict[str, str] = {}  # passage -> the BM25 document (the first holding article's title + passage)
    for article in loaded.articles:
        for chunk in chunker.chunk(article):
            documents.setdefault(chunk.text, article.title + "\n" + chunk.text)
    steps["chunk"] = time.perf_counter() - started

    started = time.perf_counter()
    for document in documents.values():
        tokenize(document)
    steps["BM25 analysis"] = time.perf_counter() - started

    m = machine()
    print(f"{len(loaded.articles)} articles, {len(documents)} distinct passages; {m['cores']} cores, {m['cpu']}, "
          f"flags: {m['cpu_flags']}")
    for step, seconds in steps.items():
        print(f"  {step:16} {seconds:6.1f} s")


if __name__ == "__main__":
    main()
