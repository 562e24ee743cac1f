"""Embedding backends compared: passages/s, fidelity to fp32, one-question latency, and retrieval quality.

`speed` embeds the same sample of an index's passages with every registered backend this machine runs
(nothing is downloaded from a model hub) and reports tokens/s, passages/s, the cosine of each vector to its
fp32 twin, p50 latency of one question, and JSQuAD dev hybrid R@1 and R@5 with that backend's passage and
question vectors (`rag eval`).

`reference` answers "is retrieval as good as fp32?" for an index built with a faster backend without
an hour of fp32 embedding: it copies the index and gives it exact fp32 vectors for every passage that
can reach a dataset question's fp32 top-100 (the fast backend's top-`pool` for that question, re-embedded
in fp32), and zero vectors elsewhere. The copy is exact when, for every question, fp32's 100th score
exceeds the fast backend's `pool`-th score plus the largest score error measured on the pool (assumed
to bound the error outside the pool as well); the command checks that bound and says so. Then `rag eval` runs on both indexes.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.embeddings import (CUDA_BACKEND, available_backends, cpu_flags, create_embedder,  # noqa: E402
                            cuda_available, vector_space)
from rag.index.folder import DENSE, MANIFEST, STORE, live_generation  # noqa: E402
from rag.index.manifest import Manifest  # noqa: E402
from rag.settings import Settings  # noqa: E402

PROMPTS = dict(query_prompt="query: ", passage_prompt="passage: ")


def sample_texts(index: Path, n: int) -> list[str]:
    db = sqlite3.connect(live_generation(index) / STORE)
    texts = [row[0] for row in db.execute("SELECT text FROM texts ORDER BY text_id")]
    random.Random(0).shuffle(texts)
    return texts[:n]


def query_latency(encode, questions: list[str]) -> float:
    encode(questions[:3])  # warm-up
    times = []
    for q in questions:
        started = time.perf_counter()
        encode([q])
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 1)


def measured_backends() -> list[str]:
    """Every registered backend this machine runs natively: the CUDA one only where torch sees a GPU, the bf16
    ones only where the CPU multiplies bf16 (elsewhere it is emulated or ignored)."""
    bf16_native = bool({"amx_bf16", "avx512_bf16"} & cpu_flags())
    return [name for name in available_backends()
            if (name != CUDA_BACKEND or cuda_available()) and (not name.endswith("-bf16") or bf16_native)]


def jsquad_recall(backend: str, dataset: Path, out: Path) -> dict:
    """Hybrid R@1 and R@5 of `rag eval` on `dataset` with passages and questions embedded by `backend` (its
    index of the paragraphs is cached per backend, so a second run only asks)."""
    subprocess.run([sys.executable, "-m", "rag.cli", "eval", "--dataset", str(dataset), "--retriever", "hybrid",
                    "--quiet", "--out", str(out / backend)],
                   env={**os.environ, "RAG_EMBEDDING_BACKEND": backend, "PYTHONPATH": str(ROOT)}, check=True,
                   stdout=subprocess.DEVNULL)
    hybrid = json.loads((out / backend / "report.json").read_text(encoding="utf-8"))["results"][0]
    return {"R@1": hybrid["recall"]["1"], "R@5": hybrid["recall"]["5"]}


def compare_backends(index: Path, passages: int, questions: list[str], model: str,
                     jsquad: Path | None = None, reports: Path | None = None,
                     backends: list[str] | None = None) -> list[dict]:
    """One row per backend (`backends`, default every one this machine runs natively): tokens/s and passages/s on
    `passages` passages of `index`, the cosine of each vector to torch fp32's (min and mean), one question's p50 ms and, given `jsquad`, hybrid R@1 and R@5."""
    texts = sample_texts(index, passages)
    reference = create_embedder("torch", model, **PROMPTS)
    tokens = sum(reference.count_tokens(["passage: " + t for t in texts]))
    fp32 = reference.encode_passages(texts)
    rows = []

    def loaded(name: str):  # one model in memory at a time (besides the fp32 reference, which is reused)
        embedder = reference if name == "torch" else create_embedder(name, model, **PROMPTS)
        return name, embedder.encode_passages, embedder.encode_queries

    for name, encode_passages, encode_queries in (loaded(name) for name in backends or measured_backends()):
        encode_passages(texts[:64])  # warm-up (oneDNN kernels, allocator)
        started = time.perf_counter()
        vectors = encode_passages(texts)
        seconds = time.perf_counter() - started
        cosines = (vectors * fp32).sum(axis=1)
        row = {"backend": name, "vector_space": vector_space(name),
               "tokens_per_s": round(tokens / seconds), "passages_per_s": round(len(texts) / seconds, 1),
               "cosine_min": round(float(cosines.min()), 4), "cosine_mean": round(float(cosines.mean()), 4),
               "query_p50_ms": query_latency(encode_queries, questions)}
        if jsquad:
            print(f"JSQuAD dev with {name} ...", file=sys.stderr, flush=True)
            row |= jsquad_recall(name, jsquad, reports or index.parent / "backend-reports")
        print(f"backend: {json.dumps(row)}", file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def backends_markdown(rows: list[dict]) -> list[str]:
    lines = ["| backend | vector space | tokens/s | passages/s | cosine to fp32 (min / mean) | one question p50 ms "
             "| JSQuAD dev hybrid R@1 | R@5 |", "|---|---|---|---|---|---|---|---|"]
    return lines + [f"| {r['backend']} | {r['vector_space']} | {r['tokens_per_s']} | {r['passages_per_s']} | "
                    f"{r['cosine_min']:.4f} / {r['cosine_mean']:.4f} | {r['query_p50_ms']} | "
                    f"{r.get('R@1', '–')} | {r.get('R@5', '–')} |" for r in rows]


def speed(args: argparse.Namespace) -> None:
    questions = [json.loads(line)["question"] for line in args.dataset.read_text(encoding="utf-8").splitlines()
                 if line.strip()][:30]
    rows = compare_backends(args.index, args.passages, questions, args.model,
                            args.jsquad if args.jsquad.is_file() else None, args.cache / "backend-reports",
                            args.backends.split(",") if args.backends else None)
    print(f"{args.passages} passages of {args.index}; {os.cpu_count()} cores\n")
    print("\n".join(backends_markdown(rows)))


def reference(args: argparse.Namespace) -> None:
    import faiss

    source = live_generation(args.index)
    manifest = Manifest.read(source / MANIFEST)
    fast = create_embedder(manifest.model.backend, args.model, **PROMPTS)
    fp32 = create_embedder("torch", args.model, **PROMPTS)
    questions = [json.loads(line)["question"] for line in args.dataset.read_text(encoding="utf-8").splitlines()
                 if line.strip()]
    dense = faiss.read_index(str(source / DENSE))
    fast_queries = fast.encode_queries(questions)
    fast_scores, fast_rows = dense.search(fast_queries, args.pool)
    pool = sorted({int(r) for r in fast_rows.ravel() if r >= 0})
    db = sqlite3.connect(source / STORE)
    texts = dict(db.execute(f"SELECT text_id, text FROM texts WHERE text_id IN ({','.join(map(str, pool))})"))
    print(f"re-embedding {len(pool)} passages in fp32 (the top-{args.pool} of {len(questions)} questions)",
          file=sys.stderr)
    exact = fp32.encode_passages([texts[r] for r in pool])
    queries = fp32.encode_queries(questions)
    stored = np.vstack([dense.reconstruct(r) for r in pool])
    # the largest score change fp32 vs fast over the pool, assumed to bound the change outside it too
    error = float(np.abs(exact @ queries.T - stored @ fast_queries.T).max())
    fp32_scores = np.sort(queries @ exact.T, axis=1)[:, ::-1]
    margin = fp32_scores[:, 99] - (fast_scores[:, -1] + error)
    print(f"largest score difference fast vs fp32 on the pool: {error:.5f}; smallest margin of the exactness "
          f"bound: {margin.min():.5f} ({'exact for every question' if margin.min() > 0 else 'NOT exact'})")
    target = args.out
    if target.exists():
        shutil.rmtree(target)
    generation = target / source.name
    shutil.copytree(source, generation)
    vectors = np.zeros((dense.ntotal, dense.d), dtype=np.float32)
    vectors[pool] = exact
    flat = faiss.IndexFlatIP(dense.d)
    flat.add(vectors)
    faiss.write_index(flat, str(generation / DENSE))
    reference_of = {"index": str(args.index), "backend": fast.backend, "pool": args.pool,
                    "questions": str(args.dataset), "exact": bool(margin.min() > 0)}
    replace(manifest, model=replace(manifest.model, backend="torch"),
            source={**manifest.source, "reference_of": reference_of}).write(generation / MANIFEST)
    (target / "CURRENT").write_text(source.name, encoding="utf-8")
    print(f"wrote the fp32 reference index {target}", file=sys.stderr)
    for index, backend in ((args.index, fast.backend), (target, "torch")):
        print(f"\n## {backend}: {index}", flush=True)
        subprocess.run([sys.executable, "-m", "rag.cli", "eval", "--dataset", str(args.dataset), "--index",
                        str(index), "--retriever", "all", "--quiet", "--out", str(args.cache / "reports" / backend)],
                       env={**os.environ, "RAG_EMBEDDING_BACKEND": backend, "PYTHONPATH": str(ROOT)}, check=True)


def main() -> None:
    settings = Settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["speed", "reference"])
    parser.add_argument("--index", type=Path, required=True, help="an index whose passages are sampled / compared")
    parser.add_argument("--dataset", type=Path, default=settings.shared / "eval" / "allforces" / "dev.jsonl")
    parser.add_argument("--model", default=settings.model)
    parser.add_argument("--passages", type=int, default=2048, help="speed: passages in the sample")
    parser.add_argument("--jsquad", type=Path, default=settings.shared / "eval" / "jsquad" / "valid-v1.1.json",
                        help="speed: JSQuAD dev, for each backend's hybrid R@1 and R@5 (skipped when absent)")
    parser.add_argument("--backends", help="speed: comma-separated backends (default: all this machine runs)")
    parser.add_argument("--pool", type=int, default=300, help="reference: fast-backend depth re-embedded in fp32")
    parser.add_argument("--out", type=Path, default=settings.cache / "fp32-reference", help="reference: where")
    parser.add_argument("--cache", type=Path, default=settings.cache)
    args = parser.parse_args()
    speed(args) if args.command == "speed" else reference(args)


if __name__ == "__main__":
    main()
