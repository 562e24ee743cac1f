"""Running the service: `serve(settings)` under uvicorn (one process, or N workers that rebuild the app
from `RAG_*` variables through `app_from_env`), and `export_env`, which writes settings for them. uvicorn
runs with a deadline for request headers (`HeaderDeadline`) and an access log without query strings."""

from __future__ import annotations

import asyncio
import copy
import ctypes
import json
import logging
import os
import subprocess
import sys
from collections.abc import MutableMapping
from typing import Any

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, SecretBytes, SecretStr
from pydantic_core import to_jsonable_python
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from rag import parts
from rag.embeddings import AUTO, CUDA_BACKEND, exported_graph_runs, resolve_backend
from rag.errors import RagError
from rag.service.app import create_app
from rag.service.config import ServiceConfig, service_config
from rag.settings import Settings

APP_FACTORY = "rag.service:app_from_env"


class HeaderDeadline(HttpToolsProtocol):
    """uvicorn's HTTP protocol, closing a connection whose request headers take over `client_timeout` seconds
    from its opening (or from the first byte of a later request on it). uvicorn itself times out only idle
    keep-alive connections: a client that connects and stalls (or sends half its headers) was held for good.
    The body's own deadline is the app's (`limits.BodyLimit`: a 408)."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any):
        super().__init__(config, *args, **kwargs)
        self.client_timeout: float = config.client_timeout  # set by uvicorn_config, pickled along to workers
        self._headers_due: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_headers()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._await_headers()

    def on_headers_complete(self) -> None:
        self._headers_arrived()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_arrived()
        super().connection_lost(exc)

    def _await_headers(self) -> None:
        if self._headers_due is None:
            self._headers_due = self.loop.call_later(self.client_timeout, self._headers_late)

    def _headers_arrived(self) -> None:
        if self._headers_due is not None:
            self._headers_due.cancel()
            self._headers_due = None

    def _headers_late(self) -> None:
        self._headers_due = None
        if not self.transport.is_closing():
            self.transport.close()


class WithoutQueryStrings(logging.Filter):
    """uvicorn's access log line without the query string: a key or a quote passed in a URL stays out of logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):  # (client, method, path, ...)
            record.args = (args[0], args[1], args[2].split("?", 1)[0], *args[3:])
        return True


# One torch thread per process for questions: on 2 cores, query embedding p50 went from 21.4 to 28.8 ms idle,
# but with another process busy on one core from 41.5 ms (max 273) to 26.9 ms (max 43) (bench/busy_neighbour.py).
SERVE_TORCH_THREADS = 1
SERVE_BACKEND = "onnx"
BUILD_NICENESS = 10  # `rag serve --build`: the build gives way to readers' questions


def serving_settings(settings: Settings) -> Settings:
    """The settings `rag serve` runs with: one thread for the model unless RAG_TORCH_THREADS says otherwise, and
    with RAG_EMBEDDING_BACKEND=auto on a CPU, the `onnx` backend: questions embed in about half torch's time,
    in the same vector space, and the service holds no torch model (rag/onnx_embedder.py)."""
    update: dict[str, Any] = {}
    if settings.torch_threads is None:
        update["torch_threads"] = SERVE_TORCH_THREADS
    if (settings.embedding_backend == AUTO and exported_graph_runs(SERVE_BACKEND, settings.model)
            and resolve_backend(AUTO, settings.embedding_device) != CUDA_BACKEND):
        update["embedding_backend"] = SERVE_BACKEND
    return settings.model_copy(update=update) if update else settings

def _log_config() -> dict:
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config.setdefault("filters", {})["without_query_strings"] = {"()": f"{__name__}.WithoutQueryStrings"}
    config["handlers"]["access"]["filters"] = ["without_query_strings"]
    return config


def uvicorn_config(app: Any, service: ServiceConfig, **options: Any) -> uvicorn.Config:
    """The uvicorn configuration `rag serve` runs with (the tests' live servers too)."""
    config = uvicorn.Config(app, host=service.host, port=service.port, http=HeaderDeadline,
                            log_config=_log_config(), **{"log_level": "info", **options})
    config.client_timeout = service.client_timeout  # read by HeaderDeadline
    return config


def _log_to_console() -> None:
    """Show the service's own messages (engine loaded, reloads) beside uvicorn's."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")


MALLOC_ARENAS = 2


def limit_malloc_arenas() -> None:
    """At most `MALLOC_ARENAS` glibc malloc arenas in this process and the ones it starts. glibc gives each new
    thread an arena of its own, up to 8 per core, and a service whose request threads each keep one grows with
    its thread pool; two keep the threads' allocations apart enough for 2 cores."""
    os.environ.setdefault("MALLOC_ARENA_MAX", str(MALLOC_ARENAS))  # read by glibc when a process starts
    try:
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, int(os.environ["MALLOC_ARENA_MAX"]))
    except (OSError, AttributeError, ValueError):  # not glibc, or a value glibc would not take either
        pass


M_ARENA_MAX = -8  # glibc's mallopt parameter number


def app_from_env() -> FastAPI:
    """uvicorn's factory for worker processes: settings from `RAG_*` variables."""
    _log_to_console()
    limit_malloc_arenas()
    return create_app(Settings())


def _values(model: BaseModel) -> dict[str, Any]:
    """The fields' values as they are (secrets still wrapped), then any extra keyword arguments."""
    return {**{name: getattr(model, name) for name in type(model).model_fields}, **(model.model_extra or {})}


def _revealed(value: Any) -> Any:
    """`value` as JSON-ready data, secrets in the clear (model_dump and str() would mask them as `**********`)."""
    if isinstance(value, SecretStr | SecretBytes):
        secret = value.get_secret_value()
        return secret.decode() if isinstance(secret, bytes) else secret
    if isinstance(value, BaseModel):
        return {name: _revealed(v) for name, v in _values(value).items()}
    if isinstance(value, dict):
        return {str(k): _revealed(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_revealed(v) for v in value]
    return to_jsonable_python(value)  # paths, enums, dates: as pydantic writes them


def env_value(value: Any) -> str:
    """The text of an environment variable that pydantic-settings reads back as `value` (complex ones as JSON)."""
    plain = _revealed(value)
    return plain if isinstance(plain, str) else json.dumps(plain, ensure_ascii=False)


def export_env(model: BaseModel, prefix: str | None = None, env: MutableMapping[str, str] = os.environ) -> None:
    """Put every value of `model` into `<prefix><NAME>` variables of `env` (default prefix: the model's
    env_prefix), so that processes started with it read the same settings; a None value removes its variable."""
    prefix = model.model_config.get("env_prefix", "") if prefix is None else prefix
    for name, value in _values(model).items():
        variable = f"{prefix}{name}".upper()
        if value is None:
            env.pop(variable, None)
        else:
            env[variable] = env_value(value)


def needs_build(settings: Settings) -> bool:
    """No index yet, or one whose vectors are not all in (a first build was stopped)."""
    try:
        return not parts.store(settings).manifest().has_vectors
    except RagError:
        return True


def start_build(settings: Settings) -> subprocess.Popen:
    """`rag index` in a background process at low priority: the service answers from its first, terms-only
    generation within minutes and swaps in the hybrid one when the vectors are in (the CURRENT poller)."""
    env = dict(os.environ)
    export_env(settings, env=env)
    env["OMP_WAIT_POLICY"] = "PASSIVE"  # its threads yield the cores to the service's questions
    print(f"jrag: building the index {settings.index} from {settings.corpus} in the background; keyword search "
          f"answers once the corpus is read, hybrid search once the passages are embedded", flush=True)
    return subprocess.Popen([sys.executable, "-m", "rag.cli", "index"], env=env,
                            preexec_fn=lambda: os.nice(BUILD_NICENESS))


def serve(settings: Settings, *, build: bool = False) -> None:
    """Run the service with uvicorn on the configured host and port; prints the URL first. `build`: first start
    `rag index` in the background when the index is missing or unfinished."""
    from uvicorn.supervisors import Multiprocess

    _log_to_console()
    limit_malloc_arenas()
    builder = start_build(settings) if build and needs_build(settings) else None
    settings = serving_settings(settings)


    config = service_config(settings)
    shown = f"[{config.host}]" if ":" in config.host else config.host
    print(f"jrag: serving http://{shown}:{config.port}/ (index {settings.index}, "
          f"{config.workers} worker{'s' if config.workers > 1 else ''}); Ctrl+C stops", flush=True)
    try:
        if config.workers > 1:
            export_env(settings)  # each worker process builds its app from RAG_* variables
            workers = uvicorn_config(APP_FACTORY, config, factory=True, workers=config.workers)
            # what uvicorn.run does for workers, with our config object (uvicorn.run would build its own)
            Multiprocess(workers, sockets=[workers.bind_socket()]).run()
        else:
            uvicorn.Server(uvicorn_config(create_app(settings), config)).run()
    except KeyboardInterrupt:
        pass
    finally:
        if builder is not None and builder.poll() is None:  # it resumes where it stopped next time
            builder.terminate()
            builder.wait(timeout=30)
