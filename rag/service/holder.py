"""The engine the endpoints use, swappable under load: leases, the first load, reloads, the CURRENT poller,
readiness."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from rag import parts
from rag.embeddings import Embedder
from rag.engine import Engine
from rag.errors import IndexNotBuilt, RagError, ReloadFailed, ServiceUnavailable
from rag.settings import Settings

log = logging.getLogger(__name__)

State = Literal["loading", "ready", "failed"]


@dataclass
class _Lease:
    engine: Engine
    owned: bool  # engines the holder built are closed by it; one handed to create_app is the caller's
    users: int = 0
    retired: bool = False

    @property
    def closable(self) -> bool:
        return self.retired and self.users == 0 and self.owned


class EngineHolder:
    """The engine the endpoints use: loading → ready (or failed), swapped atomically on reload.

    Requests take a lease on the current engine; a swap retires the old one, which is closed when its
    last lease ends, so a reload never closes an engine under a running request.
    """

    def __init__(self, settings: Settings, engine: Engine | None = None, embedder: Embedder | None = None):
        self.settings = settings  # whole: every reload builds an engine from it
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._current: _Lease | None = None
        self._embedder = embedder  # a loaded model to reuse when no engine is given
        self.state: State = "loading"
        self.error: str | None = "the engine is loading (model and index); try again shortly"
        self.loaded_at: float | None = None
        self.reloads = 0
        self._failed_generation: str | None = None
        if engine is not None:
            self._embedder = engine.embedder
            self._swap(engine, owned=False)

    # -- leases

    @contextmanager
    def lease(self) -> Iterator[Engine]:
        with self._lock:
            current = self._current
            if current is None:  # Retry-After only while loading: a failed load waits for a new generation
                raise ServiceUnavailable(self.error or "the engine is not loaded",
                                         retry_after=5 if self.state == "loading" else None)
            current.users += 1
        try:
            yield current.engine
        finally:
            self._release(current)

    def _release(self, lease: _Lease) -> None:
        with self._lock:
            lease.users -= 1
            close = lease.closable
        if close:
            lease.engine.close()

    def _swap(self, engine: Engine | None, owned: bool = True) -> str | None:
        """Make `engine` current (None: none) and retire the old one; returns the old one's generation."""
        with self._lock:
            old = self._current
            self._current = _Lease(engine, owned) if engine is not None else None
            if engine is not None:
                self.state, self.error, self.loaded_at = "ready", None, time.time()
            if old is not None:
                old.retired = True
            close_old = old is not None and old.closable
        if close_old:
            old.engine.close()
        return old.engine.generation if old else None

    @property
    def ready(self) -> bool:
        return self._current is not None

    @property
    def engine(self) -> Engine | None:
        current = self._current
        return current.engine if current else None

    # -- loading and reloading

    def _new_engine(self) -> Engine:
        current = self.engine
        if current is not None:
            return current.reopened()
        if self._embedder is None:
            self._embedder = parts.embedder(self.settings)
        return Engine(self.settings, self._embedder)

    def load(self) -> None:
        """The first load (in a background thread); a failure leaves the holder not ready."""
        try:
            self.reload()
        except IndexNotBuilt as exc:  # expected before a first build ends (`rag serve --build`): the poller loads it
            log.log(logging.INFO if self.build_progress() else logging.WARNING, "no index yet: %s", exc)
        except Exception as exc:  # noqa: BLE001  (reported by /readyz; the poller or /admin/reload retries)
            log.error("engine not loaded: %s", exc)

    def reload(self) -> dict:
        """Open the index's live generation beside the current engine, then swap it in."""
        with self._reload_lock:
            started = time.perf_counter()
            try:
                engine = self._new_engine()
            except Exception as exc:
                if isinstance(exc, RagError):
                    message = exc.message
                else:  # its text may hold paths and library internals: for the log only
                    log.exception("the engine could not be loaded")
                    message = "the engine could not be loaded (the server log says why)"
                serving = self.engine
                if serving is None:
                    with self._lock:
                        self.state, self.error = "failed", message
                    raise
                raise ReloadFailed(f"{message}; still serving generation {serving.generation}") from exc
            previous = self._swap(engine)
            if previous is not None:
                self.reloads += 1
            self._failed_generation = None
            seconds = round(time.perf_counter() - started, 3)
            log.info("engine loaded: generation %s (previous %s) in %.2f s", engine.generation, previous, seconds)
            return {"status": "reloaded", "generation": engine.generation, "previous": previous, "seconds": seconds}

    def poll_once(self) -> dict | None:
        """Reload when the index's CURRENT names another generation than the engine's (or none is loaded)."""
        try:
            live = parts.live_generation(self.settings)
        except RagError:
            return None
        engine = self.engine
        if (engine is not None and engine.generation == live) or live == self._failed_generation:
            return None
        try:
            return self.reload()
        except Exception as exc:  # noqa: BLE001
            log.error("reload of generation %s failed: %s", live, exc)
            self._failed_generation = live
            return None

    @contextmanager
    def running(self, poll_seconds: float) -> Iterator[None]:
        """While the app runs: the first load (unless ready) and the CURRENT poller in daemon threads;
        afterwards the engine is closed (once its last request is done)."""
        stop = threading.Event()
        threads = []
        if not self.ready:
            threads.append(threading.Thread(target=self.load, name="rag-engine-load", daemon=True))
        if poll_seconds > 0:
            def poll() -> None:
                while not stop.wait(poll_seconds):
                    if self.state != "loading":
                        self.poll_once()

            threads.append(threading.Thread(target=poll, name="rag-index-poll", daemon=True))
        for thread in threads:
            thread.start()
        try:
            yield
        finally:
            stop.set()
            self.close()

    def close(self) -> None:
        """No engine from now on; the last one closes once its last request is done."""
        self._swap(None)

    # -- readiness

    def build_progress(self) -> dict | None:
        """The running `rag index` (phase, passages with a vector, the share done), if one is running."""
        try:
            progress = parts.store(self.settings).progress()
        except RagError:
            return None
        if progress is None:
            return None
        return {"phase": progress.phase, "vectors": progress.vectors, "passages": progress.passages,
                "fraction": progress.fraction, "seconds": round(time.time() - progress.started_at, 1)}

    def readiness(self) -> dict:
        engine = self.engine
        if engine is None:
            return {"error": self.error or "not ready", "status": 503, "state": self.state,
                    "build": self.build_progress()}
        return {
            "status": "ready",
            "index": str(self.settings.index),
            **engine.describe(),
            "build": self.build_progress(),
            "generators": engine.generator_health(),
            "default_generator": engine.default_generator,
            "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.loaded_at)),
            "reloads": self.reloads,
        }
