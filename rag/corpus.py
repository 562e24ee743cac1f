"""The corpus layer: Jekyll posts (Markdown with YAML front matter) -> `Article`.

The shared corpus is machine-written, so besides Markdown, HTML and Liquid markup the cleaner removes
site boilerplate (related-article lists, book ads, calls to action), leaked generation artefacts (prompt
text, refusals, `[cite: …]` markers) and content the generator repeated inside one article. Everything
downstream (chunking, retrieval, quoting) sees only the plain text this module returns.
"""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import yaml

from rag.errors import CorpusNotFound, MalformedArticle, RagError
from rag.types import Article, Heading

__all__ = ["CorpusLoad", "article_url", "clean_body", "load_article", "load_corpus", "site_settings"]

# Japan has no daylight saving time, so a fixed offset is exact and needs no tz database.
SITE_TIMEZONE = timezone(timedelta(hours=9), "Asia/Tokyo")

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader is ~10x faster when built


# --- loading -------------------------------------------------------------------------------------


@dataclass
class CorpusLoad:
    """The articles that loaded, and the files that could not (each with its path and reason)."""

    articles: list[Article]
    malformed: list[MalformedArticle]
    site_url: str = ""  # as resolved for the URLs (a `_config.yml` beside the posts wins)
    permalink: str = ""


def load_corpus(root: Path, *, site_url: str, permalink: str) -> CorpusLoad:
    """Load every `*.md` under `root` (or under `root/_posts`); a bad file is collected, never raised."""
    posts = _posts_folder(Path(root))
    site_url, permalink = site_settings(posts, site_url, permalink)
    paths = sorted(posts.rglob("*.md"), key=lambda path: path.relative_to(posts).as_posix())
    if not paths:
        raise CorpusNotFound(f"corpus folder {posts} holds no .md files (set RAG_CORPUS)")
    articles: list[Article] = []
    malformed: list[MalformedArticle] = []
    seen_ids: set[str] = set()
    for path in paths:
        try:
            article = load_article(path, posts, site_url=site_url, permalink=permalink)
        except MalformedArticle as error:
            malformed.append(error)
            continue
        # Ids name chunks and citations; two posts in different subfolders must not share one.
        if article.article_id in seen_ids:
            malformed.append(MalformedArticle(article.path, f"duplicate article id {article.article_id!r}"))
            continue
        seen_ids.add(article.article_id)
        articles.append(article)
    return CorpusLoad(articles=articles, malformed=malformed, site_url=site_url, permalink=permalink)


def _posts_folder(root: Path) -> Path:
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


def load_article(path: Path, root: Path, *, site_url: str, permalink: str) -> Article:
    """Parse one post; raise `MalformedArticle` (relative path + short reason) when it cannot be an article."""
    relative = path.relative_to(root).as_posix()

    def malformed(reason: str) -> MalformedArticle:
        return MalformedArticle(relative, reason)

    raw = path.read_bytes()
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

    body, headings = clean_body(text[match.end() :])
    if not body:
        raise malformed("empty body after cleaning")

    name = path.name[: -len(".md")] if path.name.endswith(".md") else path.stem
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


# --- URLs ----------------------------------------------------------------------------------------

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


# --- body cleaning -------------------------------------------------------------------------------

_MIN_REPEAT_CHARS = 15  # shorter paragraphs (list items, "まとめ") and sentences legitimately recur
_REPEAT_COVERAGE = 0.9  # share of a paragraph's sentences already seen that makes it a repeat
_MAX_HEADING_CHARS = 150  # a longer "heading" is a paragraph flattened onto the heading line
_CTA_PITCH_MAX = 2  # paragraphs between a call-to-action heading and its button

# Literal text (code, `{% raw %}`, backslash escapes) is swapped for private-use placeholders while the
# markup is stripped, so no markup rule can touch it, and swapped back at the end.
_HOLD_OPEN, _HOLD_CLOSE = "\ue000", "\ue001"
_HELD_RE = re.compile(f"{_HOLD_OPEN}(\\d+){_HOLD_CLOSE}")
_RAW_RE = re.compile(r"\{%-?\s*raw\s*-?%\}(.*?)\{%-?\s*endraw\s*-?%\}", re.S)
_FENCE_RE = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})[^\n]*\n(.*?)(?:^[ \t]{0,3}\1[`~]*[ \t]*$|\Z)", re.S | re.M)
_CODE_SPAN_RE = re.compile(r"(?<!`)(`+)(?!`)([^\n]+?)(?<!`)\1(?!`)")
_ESCAPE_RE = re.compile(r"\\([!-/:-@\[-`{-~])")

# Only closed comments and elements: an unclosed `<script>` mentioned in prose must not eat the rest.
_HTML_COMMENT_RE = re.compile(r"<!--.*?-->", re.S)
_SCRIPT_STYLE_RE = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.S | re.I)
# Single-line only, so a stray `{{` cannot swallow the text up to some later `}}`.
_LIQUID_RE = re.compile(r"\{%[^\n]*?%\}|\{\{[^\n]*?\}\}")
# A run of TeX sub/superscript debris (`^{}_{}^{}…`, 24 k characters in one post).
_TEX_DEBRIS_RE = re.compile(r"[_^{}$]{4,}")
_AUTOLINK_RE = re.compile(r"<((?:https?|ftp)://[^\s<>]+|[\w.+-]+@[\w-]+\.[\w.-]+)>")
_HTML_HEADING_RE = re.compile(r"<h([1-6])\b[^>]*>(.*?)</h\1\s*>", re.S | re.I)
_HTML_LINE_BREAK_RE = re.compile(r"<(?:br|/?li|/?tr)\b[^>]*>", re.I)
_HTML_BLOCK_RE = re.compile(
    r"</?(?:p|div|section|article|aside|header|footer|blockquote|pre|table|thead|tbody|ul|ol|dl|figure|hr)\b[^>]*>",
    re.I,
)
_HTML_TAG_RE = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>")
_END_MARKER_RE = re.compile(r"-{3}END-{3}")
# Some posts repeat the whole article flattened onto one line ("… --- ### 見出し 本文。 * 項目 **[書名](…)** …").
# Such a line is recognised by a heading or rule marker in mid-line, or a list marker after a sentence;
# breaking it before every block marker lets the boilerplate and repeat rules below see the pieces.
_FLATTENED_MARK_RE = re.compile(
    r"[ \t\u3000](?<=[^\s|][ \t\u3000])[ \t\u3000]*(?:#{1,6}|-{3,})[ \t]|[。！？][ \t\u3000]+[-*+][ \t]"
)  # starts with a character class, not a lookbehind, so the scan can skip ahead quickly
_FLATTENED_BREAK_RE = re.compile(r"(?<=[^\s|])[ \t\u3000]+(?=(?:#{1,6}|-{3,}|[-*+])[ \t]|\*\*\[|\*※)")

_HEADING_RE = re.compile(r"^(#{1,6})(?!#)[ \t]*(.*?)(?:[ \t]+#+)?[ \t]*$")
# Rules; `===` lines are also the middle of the leaked merge-conflict blocks.
_RULE_RE = re.compile(r"^(?:(?:-[ \t]*){3,}|(?:\*[ \t]*){3,}|(?:_[ \t]*){3,}|={3,})$")
_CONFLICT_MARKER_RE = re.compile(r"^(?:<{7}|>{7})(?:\s.*)?$")
_LINK_DEFINITION_RE = re.compile(r"^ {0,3}\[[^\]^][^\]]*\]:[ \t]*<?(?:[a-z]+:|/|#|www\.)\S*(?:[ \t]+[\"'(].*)?$")

# Boilerplate. Navigation sections are a heading followed by link entries (and book blurbs).
_NAV_HEADING_RE = re.compile(r"^(?:関連記事|あわせて読みたい|この記事に関連するおすすめ書籍|おすすめ書籍|目次)\s*[:：]?$")
_LINK_ENTRY_RE = re.compile(r"^\s*(?:[-*+]\s+|\d+\.\s+)?(?:\*\*|__)?\[[^\]]*\]\(")
_BLURB_MAX_CHARS = 80  # a book blurb: one short line without sentence-final punctuation
_SENTENCE_END_RE = re.compile(r"[。！？!?]")
_DISCLAIMER_RE = re.compile(r"^[*_\s]*※.{0,60}(?:アソシエイト|アフィリエイト).{0,60}$")
_CTA_RE = re.compile(r"utm_medium=cta|consulting-cta|\]\(/contact/|無料相談をご利用ください")

# Leaked generation artefacts: the prompt's section markers and instruction lines.
_PROMPT_MARKER_RE = re.compile(r"\s*【(?:既存の記事の最後の部分(?:から続く部分)?|要求事項|文体の指示|注意|続き)】\s*$")
_PROMPT_LINE_RE = re.compile(
    r"続きを書いてください|記事の末尾に.*追加|上記の文章から自然に続く|文字程度になるよう|日本語として自然な文章で書"
    r"|AIらしい機械的な表現は避け|投資家・技術者にとって有用な情報を含め|最後に適切な結論で締めくく"
    r"|フロントマターは追加しない|既存の内容を繰り返さない|自然な流れで続きを書|記事の途切れた部分から"
    r"|親しみやすく専門的な語りかけスタイル|業界の先輩が後輩にアドバイスするような温かみ|等の表現を使用"
    r"|短文と長文のリズムを意識|提供されたテキスト|ユーザーの指示「|として提供された|ユーザーが提供した|自然に補完する"
)
# The assistant talking to its user: Japanese refusals and asides, English quota errors.
_CHATTER_RE = re.compile(
    r"申し訳(?:ありません|ございません)が|見つけることができませんでした|(?:Web|ウェブ)検索(?:が現在利用できない|を試みましたが)"
    r"|ご依頼いただいた記事|ご提示いただいた記事|承知いたしました|お話ししましょうか|教えていただけますでしょうか"
    r"|記事を作成することも可能|記事の続き(?:を|として|です)|補完し、完成させます"
    r"|I apologi[sz]e|I am (?:currently )?unable to|I'm unable to|I cannot gather|daily quota|Please let me know if"
    r"|prevents me from gathering|article you requested|I can assist you"
)
_SENTENCE_RE = re.compile(r"[^。！？!?\n]*?(?:[。！？!?]+[」』）)]*|\.(?=\s|$))|[^。！？!?\n]+|\n")
_CITE_RE = re.compile(r"[ \t]*\[(?:cite(?:_start|_end)?(?::[^\]]*)?|参照データ[^\]]*)\]")

# Inline Markdown.
_IAL_RE = re.compile(r"\{::?[^}\n]*\}")  # kramdown attribute lists: `{: .consulting-cta-link}`
_BLOCKQUOTE_RE = re.compile(r"^\s*(?:>\s?)+")
_BULLET_RE = re.compile(r"^\s*[-*+](?:[ \t]+(?:\[[ xX]\][ \t]+)?|$)")
_TABLE_SEPARATOR_RE = re.compile(r"^\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?$")
_LINK_RE = re.compile(
    r"(!?)\[((?:[^\[\]]|\[[^\[\]]*\])*)\]"
    r"\(\s*<?[^\s()<>]*(?:\([^\s()]*\)[^\s()<>]*)*>?(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*(?:\)|$)"
)  # `(?:\)|$)`: some posts end inside a link's URL
_STRONG_RE = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*|(?<![A-Za-z0-9])__(?=\S)(.+?)(?<=\S)__(?![A-Za-z0-9])")
# Single `*`/`_` emphasis only between non-alphanumerics, so `2*3*4` and `snake_case_name` survive.
_EMPHASIS_RE = re.compile(
    r"\*(?<![A-Za-z0-9*]\*)(?=[^\s*])([^*\n]+?)(?<=[^\s*])\*(?![A-Za-z0-9*])"
    r"|_(?<![A-Za-z0-9_]_)(?=[^\s_])([^_\n]+?)(?<=[^\s_])_(?![A-Za-z0-9_])"
)
_STRIKE_RE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_SPACES_RE = re.compile(r"[ \t]+")

# Only for comparing paragraphs: markup remnants and the "..." of restarted paragraphs don't count.
_KEY_IGNORED_RE = re.compile(r"[\s*#>|/\-_~.]+")
_KEY_SENTENCE_RE = re.compile(r"[^。！？!?]+[。！？!?]*")


@dataclass
class _Block:
    kind: str  # "heading" | "text" | "rule" (rules only delimit boilerplate; they never reach the body)
    lines: list[str]
    level: int = 0

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


class _Held:
    """Literal text hidden behind placeholders while markup is stripped."""

    def __init__(self) -> None:
        self._texts: list[str] = []

    def hold(self, text: str) -> str:
        self._texts.append(text)
        return f"{_HOLD_OPEN}{len(self._texts) - 1}{_HOLD_CLOSE}"

    def restore(self, text: str) -> str:
        # Held text can hold placeholders itself (a code span inside `{% raw %}`), hence the loop.
        while _HOLD_OPEN in text:
            text = _HELD_RE.sub(lambda match: self._texts[int(match.group(1))], text)
        return text


def clean_body(markdown: str) -> tuple[str, tuple[Heading, ...]]:
    """Plain text of a post body (paragraphs separated by one blank line) and its headings with offsets.

    The text keeps the original characters (no NFKC): answers quote it verbatim. NFKC is applied only
    to the keys that detect repeated paragraphs.
    """
    held = _Held()
    text = markdown.replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace(_HOLD_OPEN, "").replace(_HOLD_CLOSE, "")  # placeholders must be ours
    text = _strip_html_and_liquid(_hold_literals(text, held))
    # Prompt lines go before the `---END---` markers become paragraph breaks: one of them asks for the marker.
    text = _unflatten(_END_MARKER_RE.sub("\n\n", _drop_prompt_lines(text)))
    blocks = _drop_boilerplate(_parse_blocks(text))
    pieces = _render(blocks, held)
    pieces = _drop_repeats(pieces)
    pieces = _drop_empty_sections(pieces)
    return _assemble(pieces)


def _hold_literals(text: str, held: _Held) -> str:
    text = _RAW_RE.sub(lambda match: held.hold(match.group(1)), text)

    def fence(match: re.Match[str]) -> str:
        # Blank lines inside the code would read as paragraph breaks in the body, so they go.
        code = "\n".join(line.rstrip() for line in match.group(2).split("\n") if line.strip())
        return f"\n\n{held.hold(code)}\n\n" if code else "\n\n"

    text = _FENCE_RE.sub(fence, text)
    text = _CODE_SPAN_RE.sub(lambda match: held.hold(match.group(2).strip()), text)
    return _ESCAPE_RE.sub(lambda match: held.hold(match.group(1)), text)


def _strip_html_and_liquid(text: str) -> str:
    text = _HTML_COMMENT_RE.sub("", text)
    text = _SCRIPT_STYLE_RE.sub("", text)
    text = _TEX_DEBRIS_RE.sub("", text)
    text = _LIQUID_RE.sub("", text)
    text = _AUTOLINK_RE.sub(r"\1", text)
    text = _HTML_HEADING_RE.sub(lambda m: f"\n\n{'#' * int(m.group(1))} {' '.join(m.group(2).split())}\n\n", text)
    text = _HTML_LINE_BREAK_RE.sub("\n", text)
    text = _HTML_BLOCK_RE.sub("\n\n", text)
    return _HTML_TAG_RE.sub("", text)


def _drop_prompt_lines(text: str) -> str:
    lines = text.split("\n")
    return "\n".join(line for line in lines if not (_PROMPT_MARKER_RE.match(line) or _PROMPT_LINE_RE.search(line)))


def _unflatten(text: str) -> str:
    if not _FLATTENED_MARK_RE.search(text):
        return text
    lines = text.split("\n")
    return "\n".join(_FLATTENED_BREAK_RE.sub("\n", line) if _FLATTENED_MARK_RE.search(line) else line for line in lines)


def _parse_blocks(text: str) -> list[_Block]:
    """Blank-line paragraphs, with heading and rule lines as blocks of their own (splits glued headings)."""
    blocks: list[_Block] = []
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            blocks.append(_Block("text", paragraph.copy()))
            paragraph.clear()

    for line in text.split("\n"):
        stripped = line.strip()
        if not stripped:
            flush()
        elif _RULE_RE.match(stripped):
            flush()
            blocks.append(_Block("rule", []))
        elif _CONFLICT_MARKER_RE.match(stripped) or _LINK_DEFINITION_RE.match(line):
            continue
        elif heading := _HEADING_RE.match(stripped):
            if len(heading.group(2)) > _MAX_HEADING_CHARS:
                paragraph.append(heading.group(2))
                continue
            flush()
            if heading.group(2):  # a bare `###` only ends the paragraph
                blocks.append(_Block("heading", [heading.group(2)], len(heading.group(1))))
        else:
            paragraph.append(line)
    flush()
    return blocks


def _drop_boilerplate(blocks: list[_Block]) -> list[_Block]:
    kept: list[_Block] = []
    pending = list(reversed(blocks))  # a stack, so a navigation section can hand back the prose after it
    while pending:
        block = pending.pop()
        if block.kind == "heading" and _NAV_HEADING_RE.match(_render_inline(block.text)):
            _skip_navigation(pending)
            kept.append(_Block("rule", []))  # the removed section still separates its neighbours
        elif block.kind == "text" and _CTA_RE.search(block.text):
            _drop_cta_pitch(kept)
        elif not (block.kind == "text" and _DISCLAIMER_RE.match(block.text)):
            kept.append(block)
    return kept


def _skip_navigation(pending: list[_Block]) -> None:
    """Pop a navigation section's entries (link lists, book entries with blurbs) off the `pending` stack.

    The section ends at the first line of prose, not at the next heading: some posts go on with
    article text right after the links, even in the same paragraph.
    """
    after_entry = False  # a blurb line only counts right after a link entry (`### [書名](…)` + blurb)
    while pending:
        block = pending[-1]
        if block.kind == "heading" and _LINK_ENTRY_RE.match(block.text):
            after_entry = True
        elif block.kind == "text":
            count = 0
            for line in block.lines:
                if _LINK_ENTRY_RE.match(line) or _DISCLAIMER_RE.match(line):
                    after_entry = True
                elif not (after_entry and _is_blurb(line)):
                    break
                count += 1
            if count < len(block.lines):
                pending[-1] = _Block("text", block.lines[count:])
                return
        else:
            return
        pending.pop()


def _is_blurb(line: str) -> bool:
    """A book's one-line description: short, no sentence-final punctuation."""
    return len(line.strip()) <= _BLURB_MAX_CHARS and not _SENTENCE_END_RE.search(line)


def _drop_cta_pitch(kept: list[_Block]) -> None:
    """Drop the pitch before a call-to-action button: up to two paragraphs after a heading or rule
    (`## ご相談を承っています / 説明文 / [ボタン](…)`), the heading included."""
    for depth in range(1, min(_CTA_PITCH_MAX + 1, len(kept)) + 1):
        kind = kept[-depth].kind
        if kind == "heading":
            del kept[-depth:]
            return
        if kind == "rule":
            del kept[len(kept) - depth + 1 :]
            return


@dataclass
class _Piece:
    """A rendered paragraph or heading: plain text, literals restored."""

    text: str
    heading_level: int = 0  # 0 for paragraphs


def _render(blocks: list[_Block], held: _Held) -> list[_Piece]:
    pieces: list[_Piece] = []
    for block in blocks:
        if block.kind == "heading":
            # Held text may span lines (`{% raw %}`); a heading stays one line, a paragraph has no blank line.
            text = held.restore(_render_inline(block.text)).replace("\n", " ").strip()
            if text:
                pieces.append(_Piece(text, block.level))
        elif block.kind == "text":
            lines = held.restore(_drop_chatter("\n".join(_render_line(line) for line in block.lines))).split("\n")
            text = "\n".join(line for line in lines if line.strip()).strip()
            if text:
                pieces.append(_Piece(text))
    return pieces


def _render_line(line: str) -> str:
    if _TABLE_SEPARATOR_RE.match(line.strip()):
        return ""
    line = _BULLET_RE.sub("", _BLOCKQUOTE_RE.sub("", line))
    if line.lstrip().startswith("|"):  # table row: one line, cells joined by " / "
        cells = (_render_inline(cell) for cell in line.strip().strip("|").split("|"))
        return " / ".join(cell for cell in cells if cell)
    return _render_inline(line)


def _render_inline(text: str) -> str:
    text = _IAL_RE.sub("", _CITE_RE.sub("", text))
    text = _LINK_RE.sub(lambda match: "" if match.group(1) else match.group(2), text)
    text = _STRONG_RE.sub(lambda match: match.group(1) or match.group(2), text)
    text = _EMPHASIS_RE.sub(lambda match: match.group(1) or match.group(2), text)
    text = _STRIKE_RE.sub(r"\1", text).replace("**", "")  # leftover `**`: bold cut off by the generator
    return _SPACES_RE.sub(" ", html.unescape(text)).strip()


def _drop_chatter(text: str) -> str:
    """Remove the sentences in which the generator talks to its user instead of writing the article."""
    if not _CHATTER_RE.search(text):
        return text
    sentences = _SENTENCE_RE.findall(text)
    kept = "".join(sentence for sentence in sentences if not _CHATTER_RE.search(sentence))
    return "\n".join(line.strip() for line in kept.split("\n") if line.strip())


def _compare_key(text: str) -> str:
    return _KEY_IGNORED_RE.sub("", unicodedata.normalize("NFKC", text))


def _drop_repeats(pieces: list[_Piece]) -> list[_Piece]:
    """Drop paragraphs whose text already appeared earlier in the article.

    "Appeared" means contained in everything kept so far, so a paragraph repeated whole, a truncated copy
    and a copy flattened across several earlier paragraphs all count.
    """
    kept: list[_Piece] = []
    seen = ""
    for piece in pieces:
        key = _compare_key(piece.text)
        if not piece.heading_level and len(piece.text) >= _MIN_REPEAT_CHARS and _is_repeat(key, seen):
            continue
        seen += key
        kept.append(piece)
    return kept


def _is_repeat(key: str, seen: str) -> bool:
    """Contained in `seen`, or nearly all of its sentences are: re-generated copies differ in a few words."""
    if key in seen:
        return True
    sentences = [sentence for sentence in _KEY_SENTENCE_RE.findall(key) if len(sentence) >= _MIN_REPEAT_CHARS]
    total = sum(map(len, sentences))
    covered = sum(len(sentence) for sentence in sentences if sentence in seen)
    return total > 0 and covered >= _REPEAT_COVERAGE * total


def _drop_empty_sections(pieces: list[_Piece]) -> list[_Piece]:
    """Drop headings with no paragraph before the next heading of the same or a higher level."""
    keep = [True] * len(pieces)
    next_paragraph = len(pieces)  # index of the nearest paragraph after the current position
    section_end = [len(pieces)] * 7  # per level: index of the next heading of that level or higher
    for index in range(len(pieces) - 1, -1, -1):
        level = pieces[index].heading_level
        if not level:
            next_paragraph = index
            continue
        keep[index] = next_paragraph < section_end[level]
        for deeper in range(level, 7):
            section_end[deeper] = index
    return [piece for piece, kept in zip(pieces, keep) if kept]


def _assemble(pieces: list[_Piece]) -> tuple[str, tuple[Heading, ...]]:
    headings: list[Heading] = []
    offset = 0
    for piece in pieces:
        if piece.heading_level:
            headings.append(Heading(piece.heading_level, piece.text, offset))
        offset += len(piece.text) + 2
    return "\n\n".join(piece.text for piece in pieces), tuple(headings)
