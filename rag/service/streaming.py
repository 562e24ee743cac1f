"""Answers as Server-Sent Events: `citations`, one `delta` per piece of text, then `done` (the answer) or `error`."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from rag.engine import AskOptions
from rag.errors import RagError
from rag.service.holder import EngineHolder
from rag.service.owners import AnswerLog

log = logging.getLogger(__name__)


def sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode("utf-8")


def wants_event_stream(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "").lower()


async def answer_events(holder: EngineHolder, question: str, options: AskOptions,
                        answers: AnswerLog) -> AsyncIterator[bytes]:
    """The events of one answer; a failure once streaming has begun is an `error` event (the status is sent).
    The answer is recorded in the query log once its `done` event was sent."""
    try:
        with holder.lease() as engine:
            stream = await run_in_threadpool(engine.ask_stream, question, options)
            yield sse("citations", {"citations": [asdict(c) for c in stream.sources],
                                    "related": [asdict(r) for r in stream.related]})
            async for piece in iterate_in_threadpool(stream.pieces):
                yield sse("delta", {"text": piece})
            answer = answers.stamp(stream.answer)
            yield sse("done", asdict(answer))
        await run_in_threadpool(answers.record, answer, len(options.history))
    except RagError as exc:
        yield sse("error", {"error": exc.message, "status": exc.status})
    except Exception:  # noqa: BLE001
        log.exception("error while streaming an answer")
        yield sse("error", {"error": "internal server error", "status": 500})


def event_stream(holder: EngineHolder, question: str, options: AskOptions, answers: AnswerLog) -> StreamingResponse:
    # no-cache and no proxy buffering: each event must reach the page as soon as it is written
    return StreamingResponse(answer_events(holder, question, options, answers), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
