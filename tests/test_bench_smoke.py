"""A tiny run of `make bench` (3 articles, 4 questions) proves the benchmark still works."""

from __future__ import annotations

import pytest

import json
import os
import subprocess
import sys

from tests.conftest import PROJECT_ROOT


@pytest.mark.slow
def test_bench_smoke_run_writes_results(shared_dir, tmp_path):
    env = {**os.environ, "RAG_SHARED": str(shared_dir)}
    done = subprocess.run(
        [sys.executable, "bench/run.py", "--articles", "3", "--questions", "4", "--max-seconds", "30",
         "--name", "smoke", "--out", str(tmp_path), "--backend-passages", "16", "--no-jsquad-recall",
         "--soak-seconds", "6", "--first-answer-minutes", "0"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(next(tmp_path.glob("*-smoke.json")).read_text(encoding="utf-8"))
    assert result["build"]["articles"] == 3 and result["build"]["chunks"] > 0
    assert [run["concurrency"] for run in result["http"]] == [1, 8]
    assert all(run["errors"] == 0 and run["requests"] > 0 for run in result["http"])
    assert result["rss_after_load_mib"] > 0
    backends = {row["backend"]: row for row in result["backends"]}
    assert {"torch", "onnx", "onnx-int8"} <= set(backends)
    assert backends["onnx"]["cosine_min"] >= 0.9999 and backends["onnx-int8"]["passages_per_s"] > 0
    # an article changed, added and deleted under the running service, each answered from (or gone) in time
    assert set(result["updates"]) == {"changed", "added", "deleted"}
    assert all(u["visible_after_seconds"] is not None for u in result["updates"].values())
    assert result["query_cosine"]["min"] >= 0.9999 and result["soak"]["requests"] > 0
    report = next(tmp_path.glob("*-smoke.md")).read_text(encoding="utf-8")
    assert "| concurrency |" in report and "| POST /ask c=1 p50 | ≤ 15 ms |" in report
