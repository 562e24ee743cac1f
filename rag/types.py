"""The small typed records that travel between the pipeline's steps."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from enum import StrEnum

# The site's time zone: Jekyll builds permalinks (/2025/12/29/...) from the date in it. Japan has no
# daylight saving time, so a fixed offset is exact and needs no tz database.
SITE_TIMEZONE = timezone(timedelta(hours=9), "Asia/Tokyo")


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
    image: str = ""  # the front matter's `image` as written (a site path or a URL); "" when none

    @property
    def published_on(self) -> str:
        """The publication date (ISO) in the site's time zone: the date its permalink carries."""
        return self.date.astimezone(SITE_TIMEZONE).date().isoformat()


@dataclass(frozen=True)
class Chunk:
    """A passage of one article: `text == article.body[char_start:char_end]`."""

    article_id: str
    ordinal: int
    text: str
    char_start: int
    char_end: int
    heading_path: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Filters:
    """Restrict retrieval to articles with this category / tag, dated within [date_from, date_to]."""

    category: str | None = None
    tag: str | None = None
    date_from: date | None = None
    date_to: date | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.category, self.tag, self.date_from, self.date_to))

    def admits(self, day: date, categories, tags) -> bool:
        """Whether an article of this date, categories and tags passes (every store filters by this rule)."""
        return ((self.category is None or self.category in categories) and (self.tag is None or self.tag in tags)
                and not (self.date_from and day < self.date_from) and not (self.date_to and day > self.date_to))


@dataclass(frozen=True)
class Hit:
    """A retrieved passage: its first occurrence (`chunk` in `article`) and the other articles holding it."""

    text_id: int
    chunk: Chunk
    article: Article
    score: float  # fused score; higher is better
    dense_score: float | None = None  # cosine similarity, when the dense retriever saw it
    bm25_score: float | None = None
    also_in: tuple[str, ...] = ()
    n_articles: int = 1  # how many articles carry this exact passage (boilerplate recurs in hundreds)


@dataclass(frozen=True)
class Citation:
    """A quoted passage: `quote == passage[quote_start:quote_end]`, verbatim."""

    n: int
    article_id: str
    title: str
    date: str  # YYYY-MM-DD, the article's own date
    url: str
    categories: list[str]
    passage: str
    quote: str
    quote_start: int
    quote_end: int
    score: float
    also_in: list[str]
    image: str = ""  # the article's front matter `image` ("" when none); the service serves it, never a link


@dataclass(frozen=True)
class ShortAnswer:
    """The verbatim span that answers a factoid question: `citations[n-1].passage[start:end] == text`."""

    text: str
    n: int  # the citation it is quoted from
    start: int
    end: int


@dataclass(frozen=True)
class Related:
    article_id: str
    title: str
    date: str
    url: str


class NoticeCode(StrEnum):
    """Why an answer carries a notice: the machine-readable code the page translates (the text is for logs)."""

    NO_ARTICLE_MATCHES_FILTERS = "no_article_matches_filters"
    LLM_FALLBACK = "llm_fallback"  # the LLM failed; the answer is the extractive one


@dataclass(frozen=True)
class Notice:
    code: NoticeCode
    text: str  # English detail, e.g. "llm fallback: HTTP 401: Incorrect API key provided"


@dataclass(frozen=True)
class Facets:
    """What the indexed articles can be filtered by (the page's filter controls)."""

    categories: list[str]
    date_from: date | None
    date_to: date | None
    newest: list[Article] = field(default_factory=list)  # the latest articles (the page suggests questions on them)


@dataclass
class Answer:
    """The one answer object of the CLI, the HTTP API and the page (field names are the JSON names)."""

    question: str
    answer: str
    abstained: bool
    generator: str
    citations: list[Citation]
    related: list[Related]
    timings_ms: dict[str, float]
    notice: str | None = None  # why a fallback or a filter changed the answer, when one did (English detail)
    notice_code: NoticeCode | None = None  # the same as a code: what a page reads and translates
    repairs: list[str] = field(default_factory=list)  # what the citation check changed in a generated answer
    short_answer: ShortAnswer | None = None  # for a date, quantity or name asked for: the span that answers
    answer_id: str | None = None  # the service's query-log id, for feedback (None: not logged, as in `rag ask`)
