"""Security headers on every response: `nosniff` everywhere, and a Content-Security-Policy for the API docs,
whose page (FastAPI's, with assets served locally by fastapi-offline) carries one inline script."""

from __future__ import annotations

import base64
import hashlib
import re

from starlette.datastructures import MutableHeaders

DOCS_PATHS = ("/docs",)
# The docs load everything from this server; their one inline block is allowed by its hash. Swagger UI
# styles elements from its script and shows images as data: URLs.
DOCS_CSP = ("default-src 'self'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; connect-src 'self'; object-src 'none'; "
            "base-uri 'none'; frame-ancestors 'none'")
_INLINE_SCRIPT_RE = re.compile(rb"<script>(.*?)</script>", re.S)


def docs_csp(html: bytes) -> str:
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
                      for script in _INLINE_SCRIPT_RE.findall(html))
    return DOCS_CSP.format(hashes=hashes)


class SecurityHeaders:
    """`X-Content-Type-Options: nosniff` on every response (static files included); the docs page is
    buffered (a few kB) to hash its inline script into its policy."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        docs = scope["path"] in DOCS_PATHS
        start: dict | None = None
        body: list[bytes] = []

        async def sending(message):
            nonlocal start
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).setdefault("x-content-type-options", "nosniff")
                if not docs:
                    return await send(message)
                start = message
                return None
            if not docs or start is None:
                return await send(message)
            body.append(message.get("body", b""))
            if message.get("more_body", False):
                return None
            html = b"".join(body)
            MutableHeaders(scope=start)["content-security-policy"] = docs_csp(html)
            await send(start)
            await send({"type": "http.response.body", "body": html, "more_body": False})

        await self.app(scope, receive, sending)
