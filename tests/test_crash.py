"""Crash consistency: `rag index` killed with SIGKILL at several points of an update. After each kill the index
opens and answers from the generation that was live; the next build succeeds and leaves nothing behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rag.engine import Engine
from rag.index import FolderIndex, live_generation
from rag.index.folder import CURRENT, DENSE, MANIFEST
from tests.conftest import PROJECT_ROOT, SAMPLE_SITE, build_sample_index, service_settings

pytestmark = pytest.mark.slow


def staging(index_dir: Path) -> list[Path]:
    return list(index_dir.glob(".gen-*.tmp"))


# Where the build is killed: the first moment each condition holds (polled every millisecond).
KILL_POINTS = {
    "loading the model": lambda index_dir, started: time.monotonic() - started > 1.0,
    "writing chunks.sqlite": lambda index_dir, started: bool(staging(index_dir)),
    "writing dense.faiss": lambda index_dir, started: any((s / DENSE).exists() for s in staging(index_dir)),
    "writing terms/": lambda index_dir, started: any((s / "terms").exists() for s in staging(index_dir)),
}


def killed_build(corpus: Path, index_dir: Path, point: str) -> bool:
    """Run `rag index` in a process of its own and SIGKILL it at `point`; False when it finished first."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "RAG_SITE_URL": SAMPLE_SITE["site_url"],
           "RAG_PERMALINK": SAMPLE_SITE["permalink"], "RAG_MODEL": str(PROJECT_ROOT / "models/multilingual-e5-small")}
    process = subprocess.Popen([sys.executable, "-m", "rag.cli", "index", "--corpus", str(corpus), "--index",
                                str(index_dir), "-q"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started, reached = time.monotonic(), KILL_POINTS[point]
    try:
        while process.poll() is None:
            if reached(index_dir, started):
                process.send_signal(signal.SIGKILL)
                return process.wait(timeout=30) == -signal.SIGKILL
            time.sleep(0.001)
        return False
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_build_killed_anywhere_leaves_an_index_that_answers(sample_corpus, embedder, tmp_path):
    corpus, index_dir = tmp_path / "corpus", tmp_path / "index"
    shutil.copytree(sample_corpus / "_posts", corpus)
    build_sample_index(corpus, index_dir, embedder)
    paragraphs = "\n\n".join(f"追加の段落{i}です。新しい記事の内容を書きます。" for i in range(30))
    (corpus / "2026-03-11-new.md").write_text(
        f"---\ntitle: 新記事\ndate: 2026-03-11 09:00:00 +0900\n---\n{paragraphs}\n", encoding="utf-8")

    kills = 0
    for point in KILL_POINTS:
        kills += killed_build(corpus, index_dir, point)
        assert (live_generation(index_dir) / MANIFEST).is_file()  # the old generation (or a finished build's)
        FolderIndex.open(index_dir, embedder).close()
        engine = Engine(service_settings(index_dir), embedder)
        try:
            answer = engine.ask("富士山の標高は？")
        finally:
            engine.close()
        assert "3,776メートル" in answer.answer, point
    assert kills >= 3, "most kill points were reached before the build finished"

    build_sample_index(corpus, index_dir, embedder)
    assert staging(index_dir) == [] and not list(index_dir.glob(f".{CURRENT}.tmp"))
    assert len(list(index_dir.glob("gen-*"))) <= 2
    index = FolderIndex.open(index_dir, embedder)
    try:
        assert index.article("2026-03-11-new") is not None
    finally:
        index.close()
