"""The HTML pages: the chat page, an article page with its quote highlighted, the owner's report, error pages; Jinja2 templates
(autoescaped) served with a strict Content-Security-Policy."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from rag.engine import MAX_QUESTION_CHARS
from rag.querylog import Report
from rag.types import Article, Heading

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
STATIC_DIR = WEB_DIR / "static"
MAX_QUOTE_CHARS = 2000
# Pages we render carry no inline script or style and load nothing from elsewhere.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


def japanese_date(iso: str) -> str:
    """2025-11-15 -> 2025年11月15日 (as the chat page writes dates)."""
    year, month, day = (int(part) for part in iso.split("-"))
    return f"{year}年{month}月{day}日"


def web_url(url: str) -> str | None:
    """The URL when it is http(s); a `javascript:` or other scheme from the corpus gets no link."""
    return url if re.match(r"https?://", url or "", re.IGNORECASE) else None


@dataclass
class Block:
    kind: str  # "heading" | "paragraph"
    level: int
    segments: list[tuple[str, bool]]  # (text, highlighted)
    anchor: bool = False  # the first highlighted block: id="quote"


def article_blocks(body: str, headings: tuple[Heading, ...], quote: str | None) -> tuple[list[Block], bool]:
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


class Pages:
    """Renders each page of the site (the texts a reader sees are Japanese)."""

    def __init__(self, templates_dir: Path = WEB_DIR / "templates", framing_origins: tuple[str, ...] = ()):
        self.templates = Jinja2Templates(directory=str(templates_dir))  # autoescape on for .html
        # the chat page may be framed by the blog's own pages (the widget), and by nothing else
        self.chat_csp = PAGE_CSP.replace("frame-ancestors 'none'", "frame-ancestors " + " ".join(framing_origins)) \
            if framing_origins else PAGE_CSP
        self.templates.env.filters["japanese_date"] = japanese_date

    def render(self, request: Request, name: str, context: dict, status: int = 200, csp: str = PAGE_CSP) -> HTMLResponse:
        response = self.templates.TemplateResponse(request, name, context, status_code=status)
        response.headers["Content-Security-Policy"] = csp
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    def chat(self, request: Request, embedded: bool = False, article: Article | None = None) -> HTMLResponse:
        """The chat page; `embedded`: inside the widget's panel on the blog (a compact layout); `article`: the
        post the reader is on, which its questions prefer and its first suggestion is about."""
        return self.render(request, "chat.html", {"max_chars": MAX_QUESTION_CHARS, "embedded": embedded,
                                                  "article": article}, csp=self.chat_csp)

    def article(self, request: Request, article: Article, q: str | None) -> HTMLResponse:
        quote = (q or "").strip()[:MAX_QUOTE_CHARS] or None
        blocks, found = article_blocks(article.body, article.headings, quote)
        return self.render(request, "article.html", {
            "article": article, "date": article.published_on, "blocks": blocks,
            "quote": quote, "found": found, "original_url": web_url(article.url)})

    def admin(self, request: Request, since: str = "7d", report: Report | None = None, message: str | None = None,
              status: int = 200, chart: bytes | None = None) -> HTMLResponse:
        """The owner's page: the key form, and the query log's report once the key was right, with its chart
        (a PNG, shown as a data: URL)."""
        chart_url = "data:image/png;base64," + base64.b64encode(chart).decode() if chart else None
        return self.render(request, "admin.html", {"since": since, "report": report, "message": message,
                                                   "chart_url": chart_url}, status)

    def loading(self, request: Request) -> HTMLResponse:
        return self._error(request, 503, "インデックスを読み込み中です。しばらくしてから再読み込みしてください。")

    def article_not_found(self, request: Request, article_id: str) -> HTMLResponse:
        return self._error(request, 404, f"記事「{article_id}」は見つかりませんでした。")

    def _error(self, request: Request, status: int, message: str) -> HTMLResponse:
        return self.render(request, "error.html", {"status": status, "message": message}, status)
