"""`rag index --watch` as a blog owner runs it: a real process following a copy of the sample corpus, picking up
an added, a changed and a deleted post, each searchable without anyone running a command."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from rag.corpus.watch import next_change, snapshot
from rag.errors import IndexBusy
from rag.index.folder import BuildLock, FolderConfig, FolderStore
from tests.conftest import PROJECT_ROOT, SAMPLE_SITE
from tests.test_service import wait_for

NEW_POST = """---
title: 琵琶湖疏水の歴史
date: 2025-06-01 09:00:00 +0900
categories: [自然と地理]
---
琵琶湖疏水は、明治時代に京都へ水を引くために造られた水路です。第1疏水は1890年に完成しました。
"""


def test_a_settled_change_is_seen_once_the_folder_is_still(tmp_path):
    posts = tmp_path / "_posts"
    posts.mkdir()
    (posts / "a.md").write_text("one", encoding="utf-8")
    before = snapshot(tmp_path)
    (posts / "b.md").write_text("two", encoding="utf-8")
    after = next_change(tmp_path, before, debounce=0.2)
    assert set(after) - set(before) == {str(posts / "b.md")}
    assert snapshot(tmp_path / "missing") == {}


@pytest.mark.slow
def test_watch_indexes_added_changed_and_deleted_posts(tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(PROJECT_ROOT / "corpus", corpus)
    posts = corpus / "_posts"
    index = tmp_path / "index"
    env = {**os.environ, "RAG_CORPUS": str(corpus), "RAG_INDEX": str(index),
           "RAG_MODEL": str(PROJECT_ROOT / "models/multilingual-e5-small"), "RAG_SITE_URL": SAMPLE_SITE["site_url"],
           "RAG_PERMALINK": SAMPLE_SITE["permalink"], "RAG_WATCH_DEBOUNCE": "0.5", "OMP_WAIT_POLICY": "PASSIVE"}
    # Ctrl+C must reach it even when the suite runs as a background job, whose children inherit SIGINT ignored
    watcher = subprocess.Popen([sys.executable, "-m", "rag.cli", "index", "--watch", "--quiet"], cwd=PROJECT_ROOT,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    store = FolderStore(FolderConfig(index, 0.9, 0.4))

    def lock_is_free() -> bool:
        try:
            BuildLock(index).release()
        except IndexBusy:
            return False
        return True

    def indexed() -> dict[str, str]:
        try:
            return store.manifest().files
        except Exception:  # noqa: BLE001  (not built yet)
            return {}

    try:
        first = wait_for(indexed, timeout=240)
        changed = sorted(first)[0]
        deleted = sorted(first)[1]
        (posts / "2025-06-01-biwako-sosui.md").write_text(NEW_POST, encoding="utf-8")
        wait_for(lambda: "2025-06-01-biwako-sosui.md" in indexed(), timeout=120)

        text = (posts / changed).read_text(encoding="utf-8")
        (posts / changed).write_text(text + "\n\n追記: この段落は監視のテストで加えました。\n", encoding="utf-8")
        wait_for(lambda: indexed().get(changed, first[changed]) != first[changed], timeout=120)

        (posts / deleted).unlink()
        wait_for(lambda: deleted not in indexed(), timeout=120)
        wait_for(lock_is_free, timeout=60)  # that update has finished: Ctrl+C now stops a watcher, not a build
        time.sleep(0.5)  # the moment from releasing the lock to printing its line
        assert watcher.poll() is None, "the watcher stopped"
    finally:
        watcher.send_signal(signal.SIGINT)
        try:
            output, _ = watcher.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            watcher.kill()
            raise
    assert watcher.returncode == 0, output  # Ctrl+C while watching is the normal way to stop
    assert output.count("updated ") == 3, output
    assert "0 changed, 1 added, 0 deleted" in output and "1 changed, 0 added, 0 deleted" in output
    assert "0 changed, 0 added, 1 deleted" in output
    final = indexed()
    assert len(final) == len(first) and "2025-06-01-biwako-sosui.md" in final and deleted not in final
