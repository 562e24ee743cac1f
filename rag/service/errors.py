"""One JSON error shape everywhere, `{"error": message, "status": code}`, and the handlers that produce it."""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag.errors import RagError, encodable

log = logging.getLogger(__name__)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    # messages may quote the bad input (an unknown field's name), lone surrogates included
    return JSONResponse({"error": encodable(message), "status": status}, status_code=status, headers=headers)


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
        if kind == "string_unicode":  # pydantic's own check: of a field name, or a length-limited string
            parts.append(f"{'.'.join(loc) or 'a field name'}: not valid Unicode: a lone surrogate "
                         "(invalid UTF-8, or a \\u escape without its pair)")
            continue
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


async def _rag_error(request: Request, exc: RagError) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
    return error_response(exc.status, exc.message, headers)


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    status, message = validation_message(exc)
    return error_response(status, message)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail, ensure_ascii=False)
    return error_response(exc.status_code, message, getattr(exc, "headers", None))


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    # Starlette re-raises after this response and uvicorn then drops the connection: say so.
    return error_response(500, "internal server error", {"Connection": "close"})


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RagError, _rag_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
