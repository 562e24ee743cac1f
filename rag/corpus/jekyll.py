"""Jekyll posts -> `Article`: front matter, dates, ids, URLs from permalink patterns and `_config.yml`.

A file that cannot be an article is reported as `MalformedArticle` with its path and reason, never raised
out of `load_corpus`. Bodies are cleaned by `site_rules.clean_body` with the rule set the caller names.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import yaml

from rag.corpus.site_rules import clean_body, rule_set
from rag.errors import CorpusNotFound, MalformedArticle, RagError
from rag.types import SITE_TIMEZONE, Article

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader is ~10x faster when built


@dataclass
class CorpusLoad:
    """The articles that loaded, and the files that could not (each with its path and reason)."""

    articles: list[Article]
    malformed: list[MalformedArticle]
    site_url: str = ""  # as resolved for the URLs (a `_config.yml` beside the posts wins)
    permalink: str = ""
    # files left unparsed because the index holds their articles as read now (`KnownFiles`): path -> content hash
    unchanged: dict[str, str] = field(default_factory=dict)


def _reader_digest() -> str:
    """A digest of the code that turns files into articles: an index read by other code reads every file again."""
    digest = hashlib.sha256()
    for module in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(module.read_bytes())
    return digest.hexdigest()[:16]


READER = _reader_digest()


@dataclass(frozen=True)
class KnownFiles:
    """The files whose articles an index holds (path -> content hash) and how they were read. A file whose bytes
    are unchanged is then not parsed and cleaned again (most of reading a large corpus), unless the site settings
    it was read with differ."""

    hashes: dict[str, str]
    site_url: str
    permalink: str
    rules: str
    reader: str  # the `READER` they were read by


def load_corpus(root: Path, *, site_url: str, permalink: str, rules: str, max_bytes: int | None = None,
                known: KnownFiles | None = None) -> CorpusLoad:
    """Load every `*.md` under `root` (or under `root/_posts`); a bad file is collected, never raised.

    `rules` names the site rule set the bodies are cleaned with (`site_rules.RULE_SETS`). A file over
    `max_bytes` is skipped unread, like a malformed one. A file `known` holds unchanged goes to `unchanged`.
    """
    rule_set(rules)  # a misspelt name fails here, even when no file gets as far as cleaning
    posts = posts_folder(Path(root))
    site_url, permalink = site_settings(posts, site_url, permalink)
    paths = sorted(posts.rglob("*.md"), key=lambda path: path.relative_to(posts).as_posix())
    if not paths:
        raise CorpusNotFound(f"corpus folder {posts} holds no .md files (set RAG_CORPUS)")
    reusable = known.hashes if known and (known.site_url, known.permalink, known.rules, known.reader) == (
        site_url, permalink, rules, READER) else {}
    articles: list[Article] = []
    malformed: list[MalformedArticle] = []
    unchanged: dict[str, str] = {}
    seen_ids: set[str] = set()
    inside = posts.resolve()
    for path in paths:
        relative = path.relative_to(posts).as_posix()
        try:
            _check_file(path, posts, inside, max_bytes)
            raw = path.read_bytes()
            if reusable and reusable.get(relative) == (content_hash := hashlib.sha256(raw).hexdigest()):
                unchanged[relative] = content_hash
                seen_ids.add(_article_id(path))
                continue
            article = load_article(path, posts, site_url=site_url, permalink=permalink, rules=rules, raw=raw)
        except MalformedArticle as error:
            malformed.append(error)
            continue
        # Ids name chunks and citations; two posts in different subfolders must not share one.
        if article.article_id in seen_ids:
            malformed.append(MalformedArticle(article.path, f"duplicate article id {article.article_id!r}"))
            continue
        seen_ids.add(article.article_id)
        articles.append(article)
    return CorpusLoad(articles=articles, malformed=malformed, site_url=site_url, permalink=permalink,
                      unchanged=unchanged)


def _article_id(path: Path) -> str:
    """A post's id: its file name without `.md`."""
    return path.name[: -len(".md")] if path.name.endswith(".md") else path.stem


def _check_file(path: Path, posts: Path, inside: Path, max_bytes: int | None) -> None:
    """MalformedArticle for a file that must not be read: a link out of the corpus folder (its target would be
    published at /articles/...), a dangling link, or one over the size limit. (rglob follows no folder links.)"""
    relative = path.relative_to(posts).as_posix()
    if path.is_symlink():
        target = path.resolve()
        if not target.is_relative_to(inside):
            raise MalformedArticle(relative, "symbolic link to a file outside the corpus folder")
        if not target.is_file():
            raise MalformedArticle(relative, "symbolic link to nothing")
    if max_bytes is not None and (size := path.stat().st_size) > max_bytes:
        raise MalformedArticle(relative, f"{size} bytes, over the limit of {max_bytes} (RAG_MAX_ARTICLE_BYTES)")


def posts_folder(root: Path) -> Path:
    """`root/_posts` when there is one (a whole Jekyll site), else `root`."""
    if not root.is_dir():
        raise CorpusNotFound(f"corpus folder {root} does not exist (set RAG_CORPUS)")
    posts = root / "_posts"
    return posts if posts.is_dir() else root


def site_settings(root: Path, site_url: str, permalink: str) -> tuple[str, str]:
    """`url` (+ `baseurl`) and `permalink` from a Jekyll `_config.yml` in `root` or its parent, else the defaults."""
    for folder in (root, root.parent):
        config_path = folder / "_config.yml"
        if config_path.is_file():
            try:
                config = yaml.load(config_path.read_text(encoding="utf-8"), Loader=_YAML_LOADER)
            except yaml.YAMLError as error:
                raise RagError(f"{config_path}: broken YAML: {_yaml_problem(error, first_line=1)}") from error
            if not isinstance(config, dict):
                return site_url, permalink
            url = config.get("url") or site_url
            baseurl = config.get("baseurl") or ""
            return f"{str(url).rstrip('/')}{baseurl}", str(config.get("permalink") or permalink)
    return site_url, permalink


def load_article(path: Path, root: Path, *, site_url: str, permalink: str, rules: str,
                 raw: bytes | None = None) -> Article:
    """Parse one post (`raw`: its bytes, if read already); raise `MalformedArticle` (relative path + short reason)
    when it cannot be an article."""
    relative = path.relative_to(root).as_posix()

    def malformed(reason: str) -> MalformedArticle:
        return MalformedArticle(relative, reason)

    raw = path.read_bytes() if raw is None else raw
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise malformed(f"not UTF-8: byte 0x{raw[error.start]:02x} at offset {error.start}") from error
    match = _FRONT_MATTER_RE.match(text)
    if not match:
        raise malformed("no YAML front matter")
    try:
        front = yaml.load(match.group(1), Loader=_YAML_LOADER)
    except yaml.YAMLError as error:
        raise malformed(f"broken YAML front matter: {_yaml_problem(error, first_line=2)}") from error
    if front is None:
        front = {}
    if not isinstance(front, dict):
        raise malformed("front matter is not a mapping")

    title = _text(front.get("title"))
    if not title:
        raise malformed("missing title")
    if front.get("date") is None:
        raise malformed("missing date")
    published = _parse_date(front["date"])
    if published is None:
        raise malformed(f"bad date: {str(front['date'])[:40]!r}")

    body, headings = clean_body(text[match.end() :], rules=rules)
    if not body:
        raise malformed("empty body after cleaning")

    name = _article_id(path)
    # Jekyll takes the slug from the file name (`YYYY-MM-DD-slug.md`) but the URL's date from the front
    # matter, in the site's time zone: `2025-08-29 23:00 +0000` is published under /2025/08/30/.
    name_match = _POST_NAME_RE.match(name)
    url_date: date = published.astimezone(SITE_TIMEZONE).date()
    slug = name
    if name_match:
        try:
            date(int(name_match["year"]), int(name_match["month"]), int(name_match["day"]))
            slug = name_match["slug"]
        except ValueError:  # e.g. 2025-13-45-x.md: not a dated post name after all
            pass
    categories = _names(front.get("categories"))
    return Article(
        article_id=name,
        path=relative,
        title=title,
        date=published,
        url=article_url(site_url, permalink, url_date, slug, categories=categories),
        categories=categories,
        tags=_names(front.get("tags")),
        author=_text(front.get("author")),
        excerpt=_text(front.get("excerpt")) or _text(front.get("description")),
        body=body,
        headings=headings,
        content_hash=hashlib.sha256(raw).hexdigest(),
        image=_image(front.get("image")),
    )


_FRONT_MATTER_RE = re.compile(r"\A---[ \t]*\r?\n(.*?)(?:\r?\n)?^(?:---|\.\.\.)[ \t]*(?:\r?\n|\Z)", re.S | re.M)
_POST_NAME_RE = re.compile(r"^(?P<year>\d{4})-(?P<month>\d{1,2})-(?P<day>\d{1,2})-(?P<slug>.+)$")
# Jekyll writes `2025-12-28 08:41:23 +0000`; YAML only reads `+09:00`-style offsets itself.
_DATE_RE = re.compile(
    r"^(\d{4})-(\d{1,2})-(\d{1,2})"
    r"(?:[ T](\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6})\d*)?)?)?"
    r"\s*(Z|[+-]\d{2}:?\d{2})?$"
)


def _parse_date(value: object) -> datetime | None:
    """A time-zone aware datetime; values without an offset are site time (Asia/Tokyo), as in Jekyll."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=SITE_TIMEZONE)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=SITE_TIMEZONE)
    match = _DATE_RE.match(str(value).strip())
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    if offset is None:
        tz = SITE_TIMEZONE
    elif offset == "Z":
        tz = timezone.utc
    else:
        digits = offset[1:].replace(":", "")
        sign = -1 if offset[0] == "-" else 1
        tz = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    try:
        return datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int((fraction or "0").ljust(6, "0")),
            tzinfo=tz,
        )
    except ValueError:  # 2025-02-30, 25:00, an offset of a day or more
        return None


def _text(value: object) -> str:
    # Scalars only: YAML may read `title: 2025` as a number; a list or mapping is not text.
    return str(value).strip() if isinstance(value, (str, int, float, date)) and not isinstance(value, bool) else ""


def _image(value: object) -> str:
    """`image: /assets/a.png`, or jekyll-seo-tag's mapping form `image: {path: /assets/a.png, height: ...}`."""
    return _text(value.get("path")) if isinstance(value, dict) else _text(value)


def _names(value: object) -> tuple[str, ...]:
    """Categories / tags: a YAML list, or one string that Jekyll splits at spaces."""
    if value is None:
        return ()
    items = value.split() if isinstance(value, str) else value if isinstance(value, list) else [value]
    return tuple(name for name in (_text(item) for item in items) if name)


def _yaml_problem(error: yaml.YAMLError, *, first_line: int) -> str:
    """`could not find expected ':' at line 5`; `first_line` is the file line where the YAML starts."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem:
        mark = error.problem_mark
        return f"{error.problem} at line {mark.line + first_line}" if mark else error.problem
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


# Jekyll's built-in permalink styles.
_PERMALINK_STYLES = {
    "date": "/:categories/:year/:month/:day/:title:output_ext",
    "pretty": "/:categories/:year/:month/:day/:title/",
    "ordinal": "/:categories/:year/:y_day/:title:output_ext",
    "none": "/:categories/:title:output_ext",
}
_PLACEHOLDER_NAME_RE = re.compile(r":(categories|output_ext|short_year|i_month|i_day|y_day|year|month|day|title|slug)")


def article_url(
    site_url: str, permalink: str, date: date, slug: str, *, categories: tuple[str, ...] = ()
) -> str:
    """Public URL of a post from a Jekyll permalink pattern; the slug keeps non-ASCII characters as is."""
    values = {
        "year": f"{date.year:04d}",
        "short_year": f"{date.year % 100:02d}",
        "month": f"{date.month:02d}",
        "i_month": str(date.month),
        "day": f"{date.day:02d}",
        "i_day": str(date.day),
        "y_day": f"{date.timetuple().tm_yday:03d}",
        "title": slug,
        "slug": slug,
        "categories": "/".join(categories),
        "output_ext": ".html",
    }
    pattern = _PERMALINK_STYLES.get(permalink, permalink)
    path = _PLACEHOLDER_NAME_RE.sub(lambda match: values[match.group(1)], pattern)
    # Empty placeholders (no categories) leave `//`, which Jekyll collapses too.
    path = re.sub(r"/{2,}", "/", "/" + path)
    return site_url.rstrip("/") + path
