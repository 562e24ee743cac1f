"""The HTTP service: JSON and Server-Sent-Events answers, the chat page, article pages, hot reload.

`create_app(settings)` builds the FastAPI app (nothing is built at import time). The engine (model and
index) loads once per process, in a background thread started by the app's lifespan, so `/healthz`
answers at once while `/readyz` and `/ask` say 503 until it is loaded. A new index generation (its
`CURRENT` changed, or `POST /admin/reload`) is opened beside the running engine, sharing its model, and
swapped in atomically; the old engine closes when the last request using it finishes.

Run it with `serve(settings)` (`rag serve`), or with uvicorn's factory: `uvicorn --factory
rag.service:app_from_env` (settings from `RAG_*` variables).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Body, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, StrictStr
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag.engine import MAX_QUESTION_CHARS, AskOptions, Engine, Turn, validate_question
from rag.errors import RagError
from rag.index import live_generation
from rag.settings import Settings
from rag.types import Answer, Filters

log = logging.getLogger("rag.service")

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
MAX_BODY_BYTES = 64 * 1024
MAX_HISTORY_TURNS = 40
MAX_TURN_CHARS = 10_000
# Pages we render carry no inline script or style and load nothing from elsewhere.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


# ---------------------------------------------------------------- errors: one JSON shape everywhere


class ServiceUnavailable(RagError):
    status = 503


class AdminAuthError(RagError):
    status = 401


class AdminDisabled(RagError):
    status = 403


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def validation_message(exc: RequestValidationError) -> tuple[int, str]:
    """(status, one readable line) for pydantic's errors: malformed JSON is 400, the rest 422."""
    parts = []
    status = 422
    for error in exc.errors():
        loc = [str(p) for p in error.get("loc", ()) if p != "body"]
        if error.get("type") == "json_invalid":
            status = 400
            parts.append(f"malformed JSON: {error.get('ctx', {}).get('error', error.get('msg'))}")
            continue
        kind = error.get("type", "")
        if not loc:  # the body itself
            parts.append("the request body is missing: send a JSON object" if kind == "missing"
                         else "the request body must be a JSON object (Content-Type: application/json)")
            continue
        message = error.get("msg", "invalid value").removeprefix("Value error, ")
        if kind == "extra_forbidden":
            message = "unknown field"
        elif kind == "missing":
            message = "field required"
        parts.append(f"{'.'.join(loc)}: {message}")
    return status, "; ".join(parts) or "invalid request"


# ---------------------------------------------------------------- request models


def _iso_date(value: Any) -> Any:
    if value is None or isinstance(value, date):
        return value
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"{value!r} is not an ISO date (YYYY-MM-DD)")


IsoDate = Annotated[date | None, BeforeValidator(_iso_date)]


class FiltersIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    category: StrictStr | None = Field(None, description="Only articles with this category.", examples=["自然と地理"])
    tag: StrictStr | None = Field(None, description="Only articles with this tag.", examples=["将棋"])
    date_from: IsoDate = Field(None, description="Only articles dated on or after this day (YYYY-MM-DD).",
                               examples=["2025-01-01"])
    date_to: IsoDate = Field(None, description="Only articles dated on or before this day (YYYY-MM-DD).",
                             examples=["2025-12-31"])

    def to_filters(self) -> Filters:
        return Filters(self.category, self.tag, self.date_from, self.date_to)


class TurnIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    role: Literal["user", "assistant"]
    content: StrictStr = Field(max_length=MAX_TURN_CHARS)


class AskRequest(BaseModel):
    """A question in Japanese, with optional retrieval depth, filters and the earlier conversation."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
        {"question": "東京スカイツリーの高さは？"},
        {"question": "富士山の標高は？", "k": 5, "filters": {"category": "自然と地理", "date_from": "2025-01-01"}},
        {"question": "それはいつ開業した？", "history": [
            {"role": "user", "content": "東京スカイツリーについて教えて"},
            {"role": "assistant", "content": "東京スカイツリーは、東京都墨田区にある電波塔です。[1]"}]},
    ]})

    question: StrictStr = Field(
        description=f"The question (1 to {MAX_QUESTION_CHARS} characters after trimming).",
        examples=["東京スカイツリーの高さは？"])
    k: StrictInt | None = Field(None, ge=1, le=20, description="Passages to retrieve (default: the RAG_K setting).",
                                examples=[5])
    filters: FiltersIn | None = Field(None, description="Restrict the articles searched.")
    history: list[TurnIn] = Field(
        default_factory=list, max_length=MAX_HISTORY_TURNS,
        description="Earlier turns of the conversation, oldest first (user questions and assistant answers).")
    generator: StrictStr | None = Field(None, description="Answer generator (default: the RAG_GENERATOR setting).",
                                        examples=["extractive"])

    def options(self) -> AskOptions:
        return AskOptions(k=self.k, filters=self.filters.to_filters() if self.filters else Filters(),
                          generator=self.generator,
                          history=tuple(Turn(t.role, t.content) for t in self.history))


ASK_EXAMPLES = {
    "simple": {"summary": "質問だけ", "value": {"question": "東京スカイツリーの高さは？"}},
    "filters": {"summary": "カテゴリと期間で絞り込む", "value": {
        "question": "富士山の標高は？", "k": 5,
        "filters": {"category": "自然と地理", "date_from": "2025-01-01", "date_to": "2025-12-31"}}},
    "follow-up": {"summary": "会話の続き（履歴つき）", "value": {
        "question": "それはいつ開業した？",
        "history": [{"role": "user", "content": "東京スカイツリーについて教えて"},
                    {"role": "assistant", "content": "東京スカイツリーは、東京都墨田区にある電波塔です。[1]"}]}},
}


# ---------------------------------------------------------------- the engine, swappable under load


@dataclass
class _Lease:
    engine: Engine
    owned: bool  # engines the holder built are closed by it; one handed to create_app is the caller's
    users: int = 0
    retired: bool = False


class EngineHolder:
    """The engine the endpoints use: loading → ready (or failed), swapped atomically on reload.

    Requests take a lease on the current engine; a swap retires the old one, which is closed when its
    last lease ends, so a reload never closes an engine under a running request.
    """

    def __init__(self, settings: Settings, engine: Engine | None = None, embedder=None):
        self.settings = settings
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._current: _Lease | None = None
        self._embedder = embedder  # a loaded model to reuse when no engine is given
        self.state = "loading"
        self.error: str | None = "the engine is loading (model and index); try again shortly"
        self.loaded_at: float | None = None
        self.reloads = 0
        self._failed_generation: str | None = None
        if engine is not None:
            self._embedder = engine.embedder
            self._install(engine, owned=False)

    # -- leases

    @contextmanager
    def lease(self) -> Iterator[Engine]:
        with self._lock:
            current = self._current
            if current is None:
                raise ServiceUnavailable(self.error or "the engine is not loaded")
            current.users += 1
        try:
            yield current.engine
        finally:
            self._release(current)

    def _release(self, lease: _Lease) -> None:
        with self._lock:
            lease.users -= 1
            close = lease.retired and lease.users == 0 and lease.owned
        if close:
            lease.engine.close()

    def _install(self, engine: Engine, owned: bool) -> str | None:
        """Make `engine` current; returns the previous generation's name."""
        with self._lock:
            old = self._current
            self._current = _Lease(engine, owned)
            self.state, self.error, self.loaded_at = "ready", None, time.time()
            if old is not None:
                old.retired = True
            close_old = old is not None and old.users == 0 and old.owned
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
            from rag.embeddings import create_embedder

            s = self.settings
            self._embedder = create_embedder(
                s.embedding_backend, s.model, query_prompt=s.query_prompt, passage_prompt=s.passage_prompt,
                batch_size=s.embed_batch_size)
        return Engine(self.settings, self._embedder)

    def load(self) -> None:
        """The first load (in the lifespan's background thread); a failure leaves the holder not ready."""
        try:
            self.reload()
        except Exception as exc:  # noqa: BLE001  (reported by /readyz; the poller or /admin/reload retries)
            log.error("engine not loaded: %s", exc)

    def reload(self) -> dict:
        """Open the index's live generation beside the current engine, then swap it in."""
        with self._reload_lock:
            started = time.perf_counter()
            try:
                engine = self._new_engine()
            except Exception as exc:
                message = exc.message if isinstance(exc, RagError) else f"{exc.__class__.__name__}: {exc}"
                if self._current is None:
                    with self._lock:
                        self.state, self.error = "failed", message
                raise
            previous = self._install(engine, owned=True)
            if previous is not None:
                self.reloads += 1
            self._failed_generation = None
            seconds = round(time.perf_counter() - started, 3)
            log.info("engine loaded: generation %s (previous %s) in %.2f s", engine.generation, previous, seconds)
            return {"status": "reloaded", "generation": engine.generation, "previous": previous, "seconds": seconds}

    def poll_once(self) -> dict | None:
        """Reload when the index's CURRENT names another generation than the engine's (or none is loaded)."""
        try:
            live = live_generation(self.settings.index).name
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

    def close(self) -> None:
        with self._lock:
            current, self._current = self._current, None
            if current is not None:
                current.retired = True
            close = current is not None and current.users == 0 and current.owned
        if close:
            current.engine.close()

    def readiness(self) -> dict:
        engine = self.engine
        if engine is None:
            return {"error": self.error or "not ready", "status": 503, "state": self.state}
        manifest = engine.index.manifest
        return {
            "status": "ready",
            "index": str(self.settings.index),
            "generation": engine.generation,
            "model": manifest["model"]["id"],
            "backend": manifest["model"].get("backend"),
            "counts": manifest["counts"],
            "created_at": manifest["created_at"],
            "generators": engine.generator_health(),
            "default_generator": engine.settings.generator,
            "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.loaded_at)),
            "reloads": self.reloads,
        }


# ---------------------------------------------------------------- streaming


def sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode("utf-8")


def wants_event_stream(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "").lower()


# ---------------------------------------------------------------- body size guard


class BodyLimit:
    """413 for request bodies over `limit` bytes: by Content-Length, and by the bytes actually received."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        too_large = f"the request body is over {self.limit} bytes"
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                return await error_response(400, "invalid Content-Length header")(scope, receive, send)
            if declared > self.limit:
                return await error_response(413, too_large, {"Connection": "close"})(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.limit:
                return await error_response(413, too_large, {"Connection": "close"})(scope, receive, send)
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replayed():
            return replay.pop() if replay else await receive()

        await self.app(scope, replayed, send)


# ---------------------------------------------------------------- the article page


def web_url(url: str) -> str | None:
    """The URL when it is http(s); a `javascript:` or other scheme from the corpus gets no link."""
    return url if re.match(r"https?://", url or "", re.IGNORECASE) else None


@dataclass
class Block:
    kind: str  # "heading" | "paragraph"
    level: int
    segments: list[tuple[str, bool]]  # (text, highlighted)
    anchor: bool = False  # the first highlighted block: id="quote"


def article_blocks(body: str, headings, quote: str | None) -> tuple[list[Block], bool]:
    """The cleaned body as headings (from their offsets) and paragraphs, the first occurrence of `quote`
    marked (it may span blocks)."""
    mark = None
    if quote:
        at = body.find(quote)
        if at >= 0:
            mark = (at, at + len(quote))
    heading_lines = {}
    for h in headings:
        if 0 <= h.start < len(body):
            line_end = body.find("\n", h.start)
            heading_lines[h.start] = (line_end if line_end >= 0 else len(body), h.level)
    spans: list[tuple[int, int, int | None]] = []  # (start, end, heading level)
    for match in re.finditer(r"[^\n]+(?:\n[^\n]+)*", body):  # runs of non-empty lines
        position, end = match.start(), match.end()
        for start in sorted(s for s in heading_lines if match.start() <= s < end):
            if start > position:
                spans.append((position, start, None))
            line_end, level = heading_lines[start]
            spans.append((start, min(line_end, end), level))
            position = min(line_end, end)
        if position < end:
            spans.append((position, end, None))
    blocks: list[Block] = []
    anchored = False
    for start, end, level in spans:
        text = body[start:end]
        stripped = text.strip("\n")
        if not stripped.strip():
            continue
        start += len(text) - len(text.lstrip("\n"))
        end = start + len(stripped)
        segments: list[tuple[str, bool]] = [(stripped, False)]
        if mark and mark[0] < end and mark[1] > start:
            a, b = max(mark[0], start) - start, min(mark[1], end) - start
            segments = [(t, m) for t, m in ((stripped[:a], False), (stripped[a:b], True), (stripped[b:], False)) if t]
        block = Block("heading" if level else "paragraph", min(max(level or 2, 2), 4), segments)
        if not anchored and any(m for _, m in segments):
            block.anchor = anchored = True
        blocks.append(block)
    return blocks, mark is not None


# ---------------------------------------------------------------- the app


def create_app(settings: Settings, engine: Engine | None = None, *, embedder=None) -> FastAPI:
    """The service app. With `engine` it is ready at once; otherwise the lifespan loads one in the
    background (reusing `embedder`, an already loaded model, when given)."""
    holder = EngineHolder(settings, engine, embedder)
    templates = Jinja2Templates(directory=str(WEB_DIR / "templates"))  # autoescape on for .html

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        threads = []
        if not holder.ready:
            threads.append(threading.Thread(target=holder.load, name="rag-engine-load", daemon=True))
        if settings.reload_poll_seconds > 0:
            def poll() -> None:
                while not stop.wait(settings.reload_poll_seconds):
                    if holder.state != "loading":
                        holder.poll_once()

            threads.append(threading.Thread(target=poll, name="rag-index-poll", daemon=True))
        for thread in threads:
            thread.start()
        try:
            yield
        finally:
            stop.set()
            holder.close()

    app = FastAPI(
        title="jrag",
        summary="記事に基づいて、引用つきで日本語の質問に答えます。",
        description=("Cited answers from Japanese articles. `POST /ask` returns the answer as JSON, or as "
                     "Server-Sent Events (`citations`, `delta`…, `done` or `error`) with "
                     "`Accept: text/event-stream`. Errors are always `{\"error\": message, \"status\": code}`."),
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.holder = holder
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    if (WEB_DIR / "static").is_dir():
        app.mount("/static", StaticFiles(directory=str(WEB_DIR / "static")), name="static")

    # -- errors

    @app.exception_handler(RagError)
    async def rag_error(request: Request, exc: RagError) -> JSONResponse:
        headers = {"Retry-After": "5"} if exc.status == 503 else None
        return error_response(exc.status, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message = validation_message(exc)
        return error_response(status, message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail, ensure_ascii=False)
        return error_response(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        # Starlette re-raises after this response and uvicorn then drops the connection: say so.
        return error_response(500, "internal server error", {"Connection": "close"})

    # -- health

    @app.get("/healthz", tags=["health"], summary="The process is up (always 200).")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="200 with the index summary once the engine is loaded, else 503.",
             responses={503: {"description": "still loading, or the index could not be opened"}})
    async def readyz() -> JSONResponse:
        # once ready, readiness probes the LLM backends (cached; 2 s at most): off the event loop
        body = await run_in_threadpool(holder.readiness) if holder.ready else holder.readiness()
        return JSONResponse(body, status_code=200 if body["status"] == "ready" else 503)

    # -- asking

    @app.post("/ask", tags=["ask"], summary="Answer a question with citations (JSON, or SSE with Accept: text/event-stream).",
              responses={
                  200: {"description": "The answer object; with `Accept: text/event-stream`, the events "
                                       "`citations`, `delta` (one per sentence), then `done` (the answer object) "
                                       "or `error`.",
                        "model": Answer,
                        "content": {"text/event-stream": {"example": (
                            'event: citations\ndata: {"citations": [...], "related": [...]}\n\n'
                            'event: delta\ndata: {"text": "東京スカイツリーの高さは634メートルです。[1]"}\n\n'
                            'event: done\ndata: {"question": "東京スカイツリーの高さは？", "answer": "...", ...}\n\n')}}},
                  400: {"description": "malformed JSON"}, 413: {"description": "body over 64 KiB"},
                  422: {"description": "invalid field, empty or too long question, unknown generator"},
                  503: {"description": "the engine is still loading"}})
    async def ask(request: Request, body: Annotated[AskRequest, Body(openapi_examples=ASK_EXAMPLES)]) -> Response:
        question = validate_question(body.question)
        options = body.options()
        if not wants_event_stream(request):
            with holder.lease() as engine:
                answer = await run_in_threadpool(engine.ask, question, options)
            return JSONResponse(asdict(answer))
        with holder.lease() as engine:  # bad input is a 4xx JSON answer even when streaming was asked for
            await run_in_threadpool(engine.generator, options.generator)
        return StreamingResponse(_events(question, options), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def _events(question: str, options: AskOptions) -> AsyncIterator[bytes]:
        try:
            with holder.lease() as engine:
                stream = await run_in_threadpool(engine.ask_stream, question, options)
                yield sse("citations", {"citations": [asdict(c) for c in stream.sources],
                                        "related": [asdict(r) for r in stream.related]})
                async for piece in iterate_in_threadpool(stream.pieces):
                    yield sse("delta", {"text": piece})
                yield sse("done", asdict(stream.answer))
        except RagError as exc:
            yield sse("error", {"error": exc.message, "status": exc.status})
        except Exception:  # noqa: BLE001
            log.exception("error while streaming an answer")
            yield sse("error", {"error": "internal server error", "status": 500})

    @app.get("/api/facets", tags=["ask"], summary="Categories and date range of the indexed articles (the page's filters).")
    async def facets() -> dict:
        with holder.lease() as engine:
            span = engine.retriever.date_range()
            return {"categories": engine.retriever.categories(),
                    "date_from": span[0].isoformat() if span else None,
                    "date_to": span[1].isoformat() if span else None,
                    "generators": engine.configured_generators(),
                    "default_generator": engine.settings.generator,
                    "max_question_chars": MAX_QUESTION_CHARS}

    # -- admin

    @app.post("/admin/reload", tags=["admin"], summary="Open the index's live generation and swap it in (X-API-Key).",
              responses={401: {"description": "missing or wrong X-API-Key"},
                         403: {"description": "no admin key is configured (RAG_ADMIN_API_KEY)"}})
    async def admin_reload(x_api_key: Annotated[str | None, Header()] = None) -> dict:
        if not settings.admin_api_key:
            raise AdminDisabled("admin endpoints are disabled: set RAG_ADMIN_API_KEY to enable them")
        if not x_api_key or not hmac.compare_digest(x_api_key.encode(), settings.admin_api_key.encode()):
            raise AdminAuthError("missing or wrong X-API-Key header")
        return await run_in_threadpool(holder.reload)

    # -- pages

    def page(request: Request, name: str, context: dict, status: int = 200) -> HTMLResponse:
        response = templates.TemplateResponse(request, name, context, status_code=status)
        response.headers["Content-Security-Policy"] = PAGE_CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def chat_page(request: Request) -> HTMLResponse:
        return page(request, "chat.html", {"max_chars": MAX_QUESTION_CHARS})

    @app.get("/articles/{article_id}", response_class=HTMLResponse, tags=["pages"],
             summary="The cleaned article as a page, `q` (a quote) highlighted.")
    async def article_page(request: Request, article_id: str, q: str | None = None) -> HTMLResponse:
        if not holder.ready:
            return page(request, "error.html", {"status": 503, "message": "インデックスを読み込み中です。しばらくしてから再読み込みしてください。"}, 503)
        with holder.lease() as engine:
            article = await run_in_threadpool(engine.index.article, article_id)
        if article is None:
            return page(request, "error.html", {"status": 404, "message": f"記事「{article_id}」は見つかりませんでした。"}, 404)
        quote = (q or "").strip()[:2000] or None
        blocks, found = article_blocks(article.body, article.headings, quote)
        return page(request, "article.html", {
            "article": article, "date": article.date.date().isoformat(), "blocks": blocks,
            "quote": quote, "found": found, "original_url": web_url(article.url)})

    return app


def _log_to_console() -> None:
    """Show the service's own messages (engine loaded, reloads) beside uvicorn's."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")


def app_from_env() -> FastAPI:
    """uvicorn's factory for worker processes: settings from `RAG_*` variables."""
    _log_to_console()
    return create_app(Settings())


def _export_settings(settings: Settings) -> None:
    """Put the settings into `RAG_*` variables so worker processes build the same app."""
    for name, value in settings.model_dump().items():
        variable = f"RAG_{name.upper()}"
        if value is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = str(value)


def serve(settings: Settings) -> None:
    """Run the service with uvicorn on settings.host:settings.port; prints the URL first."""
    import uvicorn

    _log_to_console()
    host = settings.host
    shown = f"[{host}]" if ":" in host else host
    print(f"jrag: serving http://{shown}:{settings.port}/ (index {settings.index}, "
          f"{settings.workers} worker{'s' if settings.workers > 1 else ''}); Ctrl+C stops", flush=True)
    if settings.workers > 1:
        _export_settings(settings)
        uvicorn.run("rag.service:app_from_env", factory=True, host=host, port=settings.port,
                    workers=settings.workers, log_level="info")
    else:
        uvicorn.run(create_app(settings), host=host, port=settings.port, log_level="info")
