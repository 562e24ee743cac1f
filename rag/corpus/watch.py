"""Following a corpus folder: a snapshot of its posts, and waiting until it changes and then settles.

Polling the files' sizes and modification times needs no inotify (which network and container mounts often
lack) and costs a few milliseconds per thousand posts. Editors and `git pull` write several files in a burst,
so a change counts once the folder has been still for `debounce` seconds.
"""

from __future__ import annotations

import time
from pathlib import Path

from rag.corpus.jekyll import posts_folder
from rag.errors import CorpusNotFound

Snapshot = dict[str, tuple[int, int]]  # path -> (size, mtime in ns)


def snapshot(root: Path) -> Snapshot:
    """The posts (`*.md`) and the `_config.yml` files the loader reads; a missing folder is an empty snapshot."""
    try:
        posts = posts_folder(root)
    except CorpusNotFound:  # gone for a moment, as during a checkout: nothing to see
        return {}
    files = [*posts.rglob("*.md"), posts / "_config.yml", posts.parent / "_config.yml"]
    seen: Snapshot = {}
    for path in files:
        try:
            stat = path.stat()
        except OSError:  # deleted meanwhile, or a config that is not there
            continue
        seen[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return seen


def next_change(root: Path, since: Snapshot, *, debounce: float) -> Snapshot:
    """Block until the folder differs from `since` and has then stayed the same for `debounce` seconds;
    returns the settled snapshot."""
    poll = min(1.0, max(debounce / 2, 0.05))
    current = since
    while current == since:
        time.sleep(poll)
        current = snapshot(root)
    still_since = time.monotonic()
    while time.monotonic() - still_since < debounce:
        time.sleep(poll)
        latest = snapshot(root)
        if latest != current:
            current, still_since = latest, time.monotonic()
    return current
