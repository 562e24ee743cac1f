"""`create_app`: the FastAPI app and its routes (health, asking, facets, admin, pages), top to bottom."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import Body, Depends, FastAPI, Header, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from rag import parts
from rag.corpus.images import read_image
from rag.embeddings import Embedder
from rag.engine import MAX_QUESTION_CHARS, Engine, validate_question
from rag.errors import AdminAuthError, AdminDisabled, ImageNotFound, RagError
from rag.querylog import Rating, chart_png
from rag.service.config import service_config
from rag.service.errors import install_error_handlers
from rag.service.headers import SecurityHeaders
from rag.service.holder import EngineHolder
from rag.service.limits import MAX_BODY_BYTES, BodyLimit
from rag.service.owners import AnswerLog
from rag.service.pages import STATIC_DIR, Pages
from rag.service.schemas import ASK_EXAMPLES, AskRequest, FeedbackRequest
from rag.service.streaming import event_stream, wants_event_stream
from rag.settings import Settings
from rag.types import Answer

ASK_RESPONSES = {
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
    503: {"description": "the engine is still loading"}}
ADMIN_RESPONSES = {401: {"description": "missing or wrong X-API-Key"},
                   403: {"description": "no admin key is configured (RAG_ADMIN_API_KEY)"}}


def create_app(settings: Settings, engine: Engine | None = None, *, embedder: Embedder | None = None) -> FastAPI:
    """The service app. With `engine` it is ready at once; otherwise the lifespan loads one in the
    background (reusing `embedder`, an already loaded model, when given)."""
    config = service_config(settings)
    holder = EngineHolder(settings, engine, embedder)
    answers = AnswerLog(parts.query_log_config(settings))
    pages = Pages(framing_origins=config.allowed_origins)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(answers.open)
        with holder.running(config.reload_poll_seconds):
            yield

    def check_admin_key(key: str | None) -> None:
        """The admin endpoints' check: a key is configured, and `key` is that key."""
        if not config.admin_api_key:
            raise AdminDisabled("admin endpoints are disabled: set RAG_ADMIN_API_KEY to enable them")
        if not key or not hmac.compare_digest(key.encode(), config.admin_api_key.encode()):
            raise AdminAuthError("missing or wrong X-API-Key header")

    def admin_key(x_api_key: Annotated[str | None, Header()] = None) -> None:
        check_admin_key(x_api_key)

    # FastAPI's /docs with its scripts and styles served from here (fastapi-offline), not a CDN. No /redoc:
    # ReDoc still fetches its logo from its CDN.
    app = FastAPIOffline(
        static_url="/docs-assets", redoc_url=None,
        title="jrag",
        summary="記事に基づいて、引用つきで日本語の質問に答えます。",
        description=("Cited answers from Japanese articles. `POST /ask` returns the answer as JSON, or as "
                     "Server-Sent Events (`citations`, `delta`…, `done` or `error`) with "
                     "`Accept: text/event-stream`. Errors are always `{\"error\": message, \"status\": code}`."),
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.holder = holder
    app.state.answers = answers
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES, timeout=config.client_timeout)
    app.add_middleware(SecurityHeaders)
    if config.allowed_origins:  # outermost: a preflight is answered before any other check
        app.add_middleware(CORSMiddleware, allow_origins=list(config.allowed_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", "Accept"], allow_credentials=False, max_age=600)
    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    install_error_handlers(app)

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

    @app.post("/ask", tags=["ask"], responses=ASK_RESPONSES,
              summary="Answer a question with citations (JSON, or SSE with Accept: text/event-stream).")
    async def ask(request: Request, body: Annotated[AskRequest, Body(openapi_examples=ASK_EXAMPLES)]) -> Response:
        question = validate_question(body.question)
        options = body.options()
        if not wants_event_stream(request):
            with holder.lease() as engine:
                answer = answers.stamp(await run_in_threadpool(engine.ask, question, options))
            # recorded once the answer was sent
            return JSONResponse(asdict(answer), background=BackgroundTask(answers.record, answer, len(options.history)))
        with holder.lease() as engine:  # bad input is a 4xx JSON answer even when streaming was asked for
            await run_in_threadpool(engine.generator, options.generator)
        return event_stream(holder, question, options, answers)

    @app.post("/feedback", tags=["ask"], summary="Rate an answer 👍 or 👎 (by the answer_id it carried), with a comment.",
              responses={404: {"description": "no answer with this id in the query log, or the log is off"},
                         422: {"description": "invalid field"}})
    async def feedback(body: FeedbackRequest) -> dict:
        await run_in_threadpool(answers.feedback, body.answer_id, Rating(body.rating), body.comment)
        return {"status": "stored", "answer_id": body.answer_id, "rating": body.rating}

    @app.get("/api/facets", tags=["ask"], summary="Categories and date range of the indexed articles (the page's filters).")
    async def facets() -> dict:
        with holder.lease() as engine:
            facets = engine.facets()
            return {"categories": facets.categories,
                    "date_from": facets.date_from.isoformat() if facets.date_from else None,
                    "date_to": facets.date_to.isoformat() if facets.date_to else None,
                    "newest": [{"article_id": a.article_id, "title": a.title, "date": a.published_on}
                               for a in facets.newest],
                    "generators": engine.configured_generators(),
                    "default_generator": engine.default_generator,
                    "max_question_chars": MAX_QUESTION_CHARS,
                    # while a first build embeds, the page says that answers come from keyword search
                    "search": engine.search_mode, "build": holder.build_progress()}

    @app.get("/api/articles/{article_id}/image", tags=["ask"], response_class=Response,
             summary="The article's image (its front matter `image`), served from the blog's own folder.",
             responses={200: {"content": {"image/png": {}, "image/jpeg": {}, "image/gif": {}, "image/webp": {}}},
                        404: {"description": "no such article, or no image of it that the service can serve"}})
    async def article_image(article_id: str) -> Response:
        with holder.lease() as engine:
            article = await run_in_threadpool(engine.article, article_id)
        image = None
        if article is not None and article.image:
            image = await run_in_threadpool(read_image, article.image, article.url, config.site_folder)
        if image is None:  # the same short answer whatever the reason: no path or file name is ever said
            raise ImageNotFound("this article has no image")
        return Response(image.data, media_type=image.media_type, headers={"Cache-Control": "public, max-age=86400"})

    # -- admin

    @app.post("/admin/reload", tags=["admin"], summary="Open the index's live generation and swap it in (X-API-Key).",
              responses=ADMIN_RESPONSES, dependencies=[Depends(admin_key)])
    async def admin_reload() -> dict:
        return await run_in_threadpool(holder.reload)

    @app.get("/admin/report", tags=["admin"], dependencies=[Depends(admin_key)],
             summary="The query log's report since `since` (7d, 24h or YYYY-MM-DD): the most asked, the unanswered, "
                     "the answers rated 👎, per day (X-API-Key).",
             responses={**ADMIN_RESPONSES, 404: {"description": "the query log is off"},
                        422: {"description": "`since` is not a period"}})
    async def admin_report(since: str = "7d") -> dict:
        return asdict(await run_in_threadpool(answers.report, since))

    @app.get("/admin/chart.png", tags=["admin"], dependencies=[Depends(admin_key)], response_class=Response,
             summary="The report's chart: questions and abstentions per day since `since`, as a PNG (X-API-Key).",
             responses={200: {"content": {"image/png": {}}}, **ADMIN_RESPONSES,
                        404: {"description": "the query log is off"}, 422: {"description": "`since` is not a period"}})
    async def admin_chart(since: str = "7d") -> Response:
        report = await run_in_threadpool(answers.report, since)
        return Response(await run_in_threadpool(chart_png, report), media_type="image/png",
                        headers={"Cache-Control": "no-store"})

    # -- pages

    @app.get("/admin", response_class=HTMLResponse, include_in_schema=False)
    async def admin_page(request: Request) -> HTMLResponse:
        return pages.admin(request)

    @app.post("/admin", response_class=HTMLResponse, include_in_schema=False)
    async def admin_report_page(request: Request) -> HTMLResponse:
        """The report as a page: a browser cannot send X-API-Key, so the key comes in the form (a POST body,
        which no log shows)."""
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        since = form.get("since", ["7d"])[0]
        try:
            check_admin_key(form.get("key", [None])[0])
            report = await run_in_threadpool(answers.report, since)
        except RagError as exc:
            message = "管理キーが違います。" if isinstance(exc, AdminAuthError) else exc.message
            return pages.admin(request, since, message=message, status=exc.status)
        # the chart goes in the page itself: the browser could not send the key to /admin/chart.png
        return pages.admin(request, since, report, chart=await run_in_threadpool(chart_png, report))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def chat_page(request: Request, embed: bool = False, article: str | None = None) -> HTMLResponse:
        known = None  # an unknown id, or one asked before the index is loaded, is simply not used
        if article and holder.ready:
            with holder.lease() as engine:
                known = await run_in_threadpool(engine.article, article[:200])
        return pages.chat(request, embedded=embed, article=known)

    @app.get("/widget.js", include_in_schema=False)
    async def widget() -> FileResponse:
        """The blog's launcher: `<script src="https://QA-HOST/widget.js" async></script>` in a Jekyll layout."""
        return FileResponse(STATIC_DIR / "widget.js", media_type="text/javascript",
                            headers={"Cache-Control": "public, max-age=3600"})

    @app.get("/articles/{article_id}", response_class=HTMLResponse, tags=["pages"],
             summary="The cleaned article as a page, `q` (a quote) highlighted.")
    async def article_page(request: Request, article_id: str, q: str | None = None) -> HTMLResponse:
        if not holder.ready:
            return pages.loading(request)
        with holder.lease() as engine:
            article = await run_in_threadpool(engine.article, article_id)
        if article is None:
            return pages.article_not_found(request, article_id)
        return pages.article(request, article, q)

    return app
