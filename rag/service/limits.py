"""The request body limits: 413 before a large body reaches the JSON parser, 408 for one that comes too slowly."""

from __future__ import annotations

import asyncio
import time

from rag.service.errors import error_response

MAX_BODY_BYTES = 64 * 1024


class BodyLimit:
    """413 for request bodies over `limit` bytes: by Content-Length, and by the bytes actually received; 408
    when the whole body has not arrived `timeout` seconds after the headers (a slow or stalled client)."""

    def __init__(self, app, limit: int, timeout: float):
        self.app, self.limit, self.timeout = app, limit, timeout

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
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0))
            except TimeoutError:
                late = f"the request body did not arrive within {self.timeout:g} s"
                return await error_response(408, late, {"Connection": "close"})(scope, receive, send)
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
