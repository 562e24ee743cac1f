"""Embedding backends compared: passages/s, fidelity to fp32, one-question latency, and retrieval quality.

`speed` embeds the same sample of an index's passages with every registered backend (`onnx` among them; and,
when the packages are importable, with onnxruntime int8 and OpenVINO on the same exported graph:
`pip install openvino` to include it; nothing is downloaded from a model hub) and
reports tokens/s, passages/s, the cosine of each vector to its fp32 twin, and p50 latency of one question.

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

from rag.embeddings import available_backends, create_embedder  # noqa: E402
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


def onnx_encoders(model: str, cache: Path):
    """(name, encode_passages) for onnxruntime int8 and OpenVINO bf16 on the `onnx` backend's exported graph
    (`rag model install` writes it), where the packages import."""
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        print("onnxruntime not installed: skipping the ONNX backends", file=sys.stderr)
        return []
    from transformers import AutoTokenizer

    from rag.onnx_embedder import ONNX_FILE, export_onnx

    tokenizer = AutoTokenizer.from_pretrained(model)
    exported, quantized = Path(model) / ONNX_FILE, cache / "onnx" / "e5-int8.onnx"
    if not exported.exists():
        export_onnx(Path(model))
    if not quantized.exists():
        quantized.parent.mkdir(parents=True, exist_ok=True)
        quantize_dynamic(str(exported), str(quantized), weight_type=QuantType.QInt8, per_channel=True)

    def batches(texts, run, batch=32):
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), 384), dtype=np.float32)
        for first in range(0, len(order), batch):
            ids = order[first : first + batch]
            enc = tokenizer(["passage: " + texts[i] for i in ids], padding=True, truncation=True, max_length=512,
                            return_tensors="np")
            out[ids] = run(enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64))
        return out

    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    session = ort.InferenceSession(str(quantized), options, providers=["CPUExecutionProvider"])
    encoders = [("onnx-int8", lambda t: batches(t, lambda i, m: session.run(None, {"input_ids": i,
                                                                                "attention_mask": m})[0]))]
    try:
        import openvino as ov
    except ImportError:
        print("openvino not installed: skipping it", file=sys.stderr)
        return encoders
    compiled = ov.Core().compile_model(str(exported), "CPU", {"INFERENCE_PRECISION_HINT": "bf16",
                                                              "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    encoders.append(("openvino-bf16", lambda t: batches(
        t, lambda i, m: request.infer({"input_ids": i, "attention_mask": m})[0].copy())))
    return encoders


def speed(args: argparse.Namespace) -> None:
    texts = sample_texts(args.index, args.passages)
    questions = [json.loads(line)["question"] for line in args.dataset.read_text(encoding="utf-8").splitlines()
                 if line.strip()][:30]
    reference = create_embedder("torch", args.model, **PROMPTS)
    tokens = sum(reference.count_tokens(["passage: " + t for t in texts]))
    rows, fp32 = [], None
    candidates = [(name, create_embedder(name, args.model, **PROMPTS)) for name in available_backends()]
    for name, embedder in candidates:
        embedder.encode_passages(texts[:64])  # warm-up (oneDNN kernels, allocator)
        started = time.perf_counter()
        vectors = embedder.encode_passages(texts)
        seconds = time.perf_counter() - started
        fp32 = vectors if name == "torch" else fp32
        rows.append({"backend": name, "seconds": round(seconds, 1), "tokens_per_s": round(tokens / seconds),
                     "passages_per_s": round(len(texts) / seconds, 1), "vectors": vectors,
                     "query_p50_ms": query_latency(embedder.encode_queries, questions)})
    for name, encode in onnx_encoders(args.model, args.cache / "onnx"):
        encode(texts[:64])
        started = time.perf_counter()
        vectors = encode(texts)
        seconds = time.perf_counter() - started
        rows.append({"backend": name, "seconds": round(seconds, 1), "tokens_per_s": round(tokens / seconds),
                     "passages_per_s": round(len(texts) / seconds, 1), "vectors": vectors, "query_p50_ms": None})
    print(f"{len(texts)} passages of {args.index}, {tokens} tokens; {os.cpu_count()} cores\n")
    print("| backend | tokens/s | passages/s | cosine to fp32 (min / mean) | one question p50 ms |")
    print("|---|---|---|---|---|")
    for row in rows:
        cosines = (row.pop("vectors") * fp32).sum(axis=1)
        print(f"| {row['backend']} | {row['tokens_per_s']} | {row['passages_per_s']} | "
              f"{cosines.min():.4f} / {cosines.mean():.4f} | {row['query_p50_ms'] or '–'} |")


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
    parser.add_argument("--pool", type=int, default=300, help="reference: fast-backend depth re-embedded in fp32")
    parser.add_argument("--out", type=Path, default=settings.cache / "fp32-reference", help="reference: where")
    parser.add_argument("--cache", type=Path, default=settings.cache)
    args = parser.parse_args()
    speed(args) if args.command == "speed" else reference(args)


if __name__ == "__main__":
    main()
