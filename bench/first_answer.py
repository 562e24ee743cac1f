"""Time to the first answer and to the hybrid index, as a new user meets them: `rag serve --build` on a corpus
with no index, a client polling /readyz and asking one question as soon as the service answers.

Records when the service first answers (keyword search from the terms-only generation), the first cited answer,
the embedding's progress over time (passages/s) and, if it comes within --max-minutes, when hybrid search goes
live. The index is kept (`--index`): a later run with the same folder resumes the build where it stopped.
Results: bench/results/<date>-<name>.{md,json} (--name, default first-answer).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import machine  # noqa: E402
from rag.settings import Settings  # noqa: E402

QUESTION = "GatikはLoblawとの契約で、最初の2年間に自動運転トラックを何台投入する計画ですか？"  # af-0020 of the dev set


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measure(corpus: Path, index: Path, max_minutes: float) -> dict:
    """`rag serve --build` on `corpus` into `index` (resumed where it exists), polled until hybrid search is live
    or `max_minutes` pass: the seconds to the first answers and to hybrid search, and the embedding's rate."""
    port = free_port()
    env = {**os.environ, "RAG_CORPUS": str(corpus), "RAG_INDEX": str(index), "RAG_PORT": str(port),
           "RAG_QUERY_LOG": "off", "PYTHONPATH": str(ROOT)}
    resumed = index.exists()
    started = time.monotonic()
    server = subprocess.Popen([sys.executable, "-m", "rag.cli", "serve", "--build"], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    timeline: list[dict] = []
    first_ready = first_answer = hybrid = None
    answer = None
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            while time.monotonic() - started < max_minutes * 60 and server.poll() is None:
                elapsed = round(time.monotonic() - started, 1)
                try:
                    ready = client.get("/readyz").json()
                except httpx.HTTPError:
                    time.sleep(1)
                    continue
                build = ready.get("build")
                timeline.append({"seconds": elapsed, "status": ready.get("status"), "search": ready.get("search"),
                                 "phase": build and build["phase"], "vectors": build and build["vectors"],
                                 "passages": build and build["passages"]})
                if ready.get("status") == "ready" and first_ready is None:
                    first_ready = elapsed
                if first_ready is not None and first_answer is None:
                    reply = client.post("/ask", json={"question": QUESTION}).json()
                    if reply.get("citations"):
                        first_answer, answer = round(time.monotonic() - started, 1), reply
                if ready.get("search") == "hybrid" and build is None:
                    hybrid = elapsed
                    break
                time.sleep(5 if first_answer else 1)
    finally:
        os.killpg(server.pid, signal.SIGINT)  # the build saves its vectors: a later run resumes
        server.wait(timeout=60)

    embedding = [t for t in timeline if t["phase"] == "embedding" and t["vectors"]]
    rate = None
    if len(embedding) >= 2:
        a, b = embedding[0], embedding[-1]
        rate = round((b["vectors"] - a["vectors"]) / (b["seconds"] - a["seconds"]), 1) if b["seconds"] > a["seconds"] else None
    return {"machine": machine(), "corpus": str(corpus), "resumed": resumed,
            "first_ready_s": first_ready, "first_cited_answer_s": first_answer, "hybrid_s": hybrid,
            "embedding_passages_per_s": rate, "last": timeline[-1] if timeline else None,
            "answer": answer and {"answer": answer["answer"], "titles": [c["title"] for c in answer["citations"]]},
            "max_minutes": max_minutes, "timeline": timeline}


def markdown_rows(result: dict) -> list[str]:
    """The measures as a Markdown table."""
    last, hybrid = result["last"] or {}, result["hybrid_s"]
    live = f"{hybrid} s" if hybrid is not None else f"not within {result['max_minutes']:g} min"
    return ["| measure | value |", "|---|---|",
            f"| service answers (keyword search) | {result['first_ready_s']} s |",
            f"| first cited answer | {result['first_cited_answer_s']} s |",
            f"| hybrid search live | {live} |",
            f"| embedding rate while serving | {result['embedding_passages_per_s']} passages/s |",
            *([] if hybrid is not None else
              [f"| vectors at the end | {last.get('vectors')} of {last.get('passages')} |"])]


def main() -> None:
    settings = Settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=settings.shared / "corpus" / "allforces")
    parser.add_argument("--index", type=Path, default=settings.cache / "first-answer-index")
    parser.add_argument("--max-minutes", type=float, default=30.0, help="stop waiting for hybrid search after this")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--name", default="first-answer", help="results file: <date>-<name>.{md,json}")
    args = parser.parse_args()

    result = measure(args.corpus, args.index, args.max_minutes)
    day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{day}-{args.name}.json").write_text(json.dumps(result, ensure_ascii=False, indent=1),
                                                      encoding="utf-8")
    machine_ = result["machine"]
    lines = [f"# First answers ({day})", "", f"`python bench/first_answer.py --max-minutes {args.max_minutes:g}` on "
             f"{args.corpus} ({'resuming an earlier run' if result['resumed'] else 'no index at the start'}); "
             f"{machine_['cores']} cores, {machine_['cpu']}, flags: {machine_['cpu_flags']}.", "",
             *markdown_rows(result), ""]
    if result["answer"]:
        lines += [f"First answer to 「{QUESTION}」: {result['answer']['answer'][:200]}", ""]
    (args.out / f"{day}-{args.name}.md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
