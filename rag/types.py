"""The small typed records that travel between the pipeline's steps."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Heading:
    """A Markdown heading of the cleaned body: `start` is its character offset."""

    level: int
    text: str
    start: int


@dataclass(frozen=True)
class Article:
    """One corpus file, front matter parsed and body cleaned of markup and boilerplate."""

    article_id: str  # file name without `.md`, e.g. `2025-09-30-2-ai-article-update`
    path: str  # file name relative to the corpus folder
    title: str
    date: datetime  # time-zone aware
    url: str
    categories: tuple[str, ...]
    tags: tuple[str, ...]
    author: str
    excerpt: str
    body: str  # cleaned text; paragraphs separated by blank lines, heading lines without `#`
    headings: tuple[Heading, ...]
    content_hash: str  # sha256 of the raw file bytes


@dataclass(frozen=True)
class Chunk:
    """A passage of one article: `text == article.body[char_start:char_end]`."""

    article_id: str
    ordinal: int
    text: str
    char_start: int
    char_end: int
    heading_path: tuple[str, ...] = field(default=())
