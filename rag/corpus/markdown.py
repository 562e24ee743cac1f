"""Markdown (with HTML, Liquid and kramdown attribute lists) -> plain text with headings and their offsets.

Only rules that any Jekyll blog needs live here. A site's own cleanup joins the pipeline through the
`SiteRules` hooks; the base class adds nothing, which is the plain-blog behaviour.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Literal

from rag.types import Heading

# Literal text (code, `{% raw %}`, backslash escapes) is swapped for private-use placeholders while the
# markup is stripped, so no markup rule can touch it, and swapped back at the end.
_HOLD_OPEN, _HOLD_CLOSE = "\ue000", "\ue001"
_HELD_RE = re.compile(f"{_HOLD_OPEN}(\\d+){_HOLD_CLOSE}")
# Every pattern below runs in linear time on any input: a body never holds its own opener, so the scan for a
# closer stops at the next opener, and runs of one character are taken whole (possessive). A lazy `.*?`
# rescans the rest of the text from every unclosed opener: a 1 MB file of `<!--` took hours.
_RAW_RE = re.compile(r"\{%-?\s*raw\s*-?%\}((?:[^{]|\{(?!%-?\s*(?:end)?raw\b))*)\{%-?\s*endraw\s*-?%\}")
_FENCE_RE = re.compile(r"^[ \t]{0,3}(`{3,}+|~{3,}+)[^\n]*\n(.*?)(?:^[ \t]{0,3}\1[`~]*[ \t]*$|\Z)", re.S | re.M)
_CODE_SPAN_RE = re.compile(r"(?<!`)(`++)([^\n]+?)(?<!`)\1(?!`)")
_ESCAPE_RE = re.compile(r"\\([!-/:-@\[-`{-~])")

# Only closed comments and elements: an unclosed `<script>` mentioned in prose must not eat the rest.
_HTML_COMMENT_RE = re.compile(r"<!--(?:[^<-]|<(?!!--)|-(?!->))*-->")
_SCRIPT_STYLE_RE = re.compile(r"<(script|style)\b[^<>]*>((?:[^<]|<(?!/?(?:script|style)\b))*)</\1\s*>", re.I)
# Single-line only, so a stray `{{` cannot swallow the text up to some later `}}`.
_LIQUID_RE = re.compile(r"\{%(?:[^%{\n]|%(?!\})|\{(?!%))*%\}|\{\{(?:[^{}\n]|\{(?!\{)|\}(?!\}))*\}\}")
_AUTOLINK_RE = re.compile(r"<((?:https?|ftp)://[^\s<>]+|[\w.+-]+@[\w-]+\.[\w.-]+)>")
_HTML_HEADING_RE = re.compile(r"<h([1-6])\b[^<>]*>((?:[^<]|<(?!/?h[1-6]\b))*)</h\1\s*>", re.I)
_HTML_LINE_BREAK_RE = re.compile(r"<(?:br|/?li|/?tr)\b[^<>]*>", re.I)
_HTML_BLOCK_RE = re.compile(
    r"</?(?:p|div|section|article|aside|header|footer|blockquote|pre|table|thead|tbody|ul|ol|dl|figure|hr)\b[^<>]*>",
    re.I,
)
_HTML_TAG_RE = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>")

_HEADING_RE = re.compile(r"^(#{1,6})(?!#)[ \t]*(.*?)(?:[ \t]+#+)?[ \t]*$")
# Thematic breaks, and `===` lines: a setext underline or a separator is decoration, never text.
_RULE_RE = re.compile(r"^(?:(?:-[ \t]*){3,}|(?:\*[ \t]*){3,}|(?:_[ \t]*){3,}|={3,})$")
_LINK_DEFINITION_RE = re.compile(r"^ {0,3}\[[^\]^][^\]]*\]:[ \t]*<?(?:[a-z]+:|/|#|www\.)\S*(?:[ \t]+[\"'(].*)?$")

_IAL_RE = re.compile(r"\{::?[^{}\n]*\}")  # kramdown attribute lists: `{: .consulting-cta-link}`
_BLOCKQUOTE_RE = re.compile(r"^\s*(?:>\s?)+")
_BULLET_RE = re.compile(r"^\s*[-*+](?:[ \t]+(?:\[[ xX]\][ \t]+)?|$)")
_TABLE_SEPARATOR_RE = re.compile(r"^\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?$")
_LINK_RE = re.compile(
    r"(!?)\[((?:[^\[\]]|\[[^\[\]]*\])*)\]"
    r"\(\s*<?[^\s()<>]*(?:\([^\s()]*\)[^\s()<>]*)*>?(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*(?:\)|$)"
)  # `(?:\)|$)`: a post may end inside a link's URL
_STRONG_RE = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*|(?<![A-Za-z0-9])__(?=\S)(.+?)(?<=\S)__(?![A-Za-z0-9])")
# Single `*`/`_` emphasis only between non-alphanumerics, so `2*3*4` and `snake_case_name` survive.
_EMPHASIS_RE = re.compile(
    r"\*(?<![A-Za-z0-9*]\*)(?=[^\s*])([^*\n]+?)(?<=[^\s*])\*(?![A-Za-z0-9*])"
    r"|_(?<![A-Za-z0-9_]_)(?=[^\s_])([^_\n]+?)(?<=[^\s_])_(?![A-Za-z0-9_])"
)
_STRIKE_RE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_SPACES_RE = re.compile(r"[ \t]+")


@dataclass
class Block:
    """A paragraph (its source lines), a heading, or a rule, which only separates its neighbours."""

    kind: Literal["heading", "text", "rule"]
    lines: list[str]
    level: int = 0

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass
class Piece:
    """A rendered paragraph or heading: plain text, literals restored."""

    text: str
    heading_level: int = 0  # 0 for paragraphs


class SiteRules:
    """Where a site's own cleanup joins the pipeline, one hook per stage; these defaults change nothing."""

    # A longer heading line is read as a paragraph; None: headings of any length.
    max_heading_chars: int | None = None

    def clean_markup(self, text: str) -> str:
        """The source with literals held and HTML comments and scripts gone, before Liquid and tags go."""
        return text

    def clean_text(self, text: str) -> str:
        """The source without HTML and Liquid, before it is split into blocks."""
        return text

    def clean_blocks(self, blocks: list[Block]) -> list[Block]:
        """Paragraphs (source lines), headings and rules, before they are rendered."""
        return blocks

    def clean_inline(self, text: str) -> str:
        """One source line or heading, before its inline markup is rendered."""
        return text

    def clean_paragraph(self, text: str) -> str:
        """A rendered paragraph whose literals are still held."""
        return text

    def clean_pieces(self, pieces: list[Piece]) -> list[Piece]:
        """The rendered paragraphs and headings of the whole article."""
        return pieces


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


def markdown_to_text(markdown: str, site: SiteRules) -> tuple[str, tuple[Heading, ...]]:
    """Plain text of a post body (paragraphs separated by one blank line) and its headings with offsets.

    The text keeps the original characters (no NFKC): answers quote it verbatim.
    """
    held = _Held()
    text = markdown.replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace(_HOLD_OPEN, "").replace(_HOLD_CLOSE, "")  # placeholders must be ours
    text = _drop_hidden_markup(_hold_literals(text, held))
    text = _strip_liquid_and_html(site.clean_markup(text))
    blocks = site.clean_blocks(_parse_blocks(site.clean_text(text), site.max_heading_chars))
    pieces = site.clean_pieces(_render(blocks, held, site))
    return _assemble(_drop_empty_sections(pieces))


def _hold_literals(text: str, held: _Held) -> str:
    text = _RAW_RE.sub(lambda match: held.hold(match.group(1)), text)

    def fence(match: re.Match[str]) -> str:
        # Blank lines inside the code would read as paragraph breaks in the body, so they go.
        code = "\n".join(line.rstrip() for line in match.group(2).split("\n") if line.strip())
        return f"\n\n{held.hold(code)}\n\n" if code else "\n\n"

    text = _FENCE_RE.sub(fence, text)
    text = _CODE_SPAN_RE.sub(lambda match: held.hold(match.group(2).strip()), text)
    return _ESCAPE_RE.sub(lambda match: held.hold(match.group(1)), text)


def _drop_hidden_markup(text: str) -> str:
    """HTML comments, scripts and styles: markup whose content is never shown."""
    return _SCRIPT_STYLE_RE.sub("", _HTML_COMMENT_RE.sub("", text))


def _strip_liquid_and_html(text: str) -> str:
    """Liquid tags go; HTML tags go but keep their text, headings and line or block breaks."""
    text = _LIQUID_RE.sub("", text)
    text = _AUTOLINK_RE.sub(r"\1", text)
    text = _HTML_HEADING_RE.sub(lambda m: f"\n\n{'#' * int(m.group(1))} {' '.join(m.group(2).split())}\n\n", text)
    text = _HTML_LINE_BREAK_RE.sub("\n", text)
    text = _HTML_BLOCK_RE.sub("\n\n", text)
    return _HTML_TAG_RE.sub("", text)


def _parse_blocks(text: str, max_heading_chars: int | None) -> list[Block]:
    """Blank-line paragraphs, with heading and rule lines as blocks of their own (splits glued headings)."""
    blocks: list[Block] = []
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            blocks.append(Block("text", paragraph.copy()))
            paragraph.clear()

    for line in text.split("\n"):
        stripped = line.strip()
        if not stripped:
            flush()
        elif _RULE_RE.match(stripped):
            flush()
            blocks.append(Block("rule", []))
        elif _LINK_DEFINITION_RE.match(line):
            continue
        elif heading := _HEADING_RE.match(stripped):
            if max_heading_chars is not None and len(heading.group(2)) > max_heading_chars:
                paragraph.append(heading.group(2))
                continue
            flush()
            if heading.group(2):  # a bare `###` only ends the paragraph
                blocks.append(Block("heading", [heading.group(2)], len(heading.group(1))))
        else:
            paragraph.append(line)
    flush()
    return blocks


def _render(blocks: list[Block], held: _Held, site: SiteRules) -> list[Piece]:
    pieces: list[Piece] = []
    for block in blocks:
        if block.kind == "heading":
            # Held text may span lines (`{% raw %}`); a heading stays one line, a paragraph has no blank line.
            text = held.restore(render_inline(block.text, site)).replace("\n", " ").strip()
            if text:
                pieces.append(Piece(text, block.level))
        elif block.kind == "text":
            rendered = "\n".join(_render_line(line, site) for line in block.lines)
            lines = held.restore(site.clean_paragraph(rendered)).split("\n")
            text = "\n".join(line for line in lines if line.strip()).strip()
            if text:
                pieces.append(Piece(text))
    return pieces


def _render_line(line: str, site: SiteRules) -> str:
    if _TABLE_SEPARATOR_RE.match(line.strip()):
        return ""
    line = _BULLET_RE.sub("", _BLOCKQUOTE_RE.sub("", line))
    if line.lstrip().startswith("|"):  # table row: one line, cells joined by " / "
        cells = (render_inline(cell, site) for cell in line.strip().strip("|").split("|"))
        return " / ".join(cell for cell in cells if cell)
    return render_inline(line, site)


def render_inline(text: str, site: SiteRules) -> str:
    """Links keep their text, images go, emphasis markers go, entities are decoded, spaces collapse."""
    text = _IAL_RE.sub("", site.clean_inline(text))
    text = _LINK_RE.sub(lambda match: "" if match.group(1) else match.group(2), text)
    text = _STRONG_RE.sub(lambda match: match.group(1) or match.group(2), text)
    text = _EMPHASIS_RE.sub(lambda match: match.group(1) or match.group(2), text)
    text = _STRIKE_RE.sub(r"\1", text).replace("**", "")  # a `**` left unpaired is an unclosed bold marker
    return _SPACES_RE.sub(" ", html.unescape(text)).strip()


def _drop_empty_sections(pieces: list[Piece]) -> list[Piece]:
    """Drop headings with no paragraph before the next heading of the same or a higher level.

    A heading labels the text under it; with none (left empty by the author or by a site rule) it would
    only be a stray line in the body.
    """
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


def _assemble(pieces: list[Piece]) -> tuple[str, tuple[Heading, ...]]:
    headings: list[Heading] = []
    offset = 0
    for piece in pieces:
        if piece.heading_level:
            headings.append(Heading(piece.heading_level, piece.text, offset))
        offset += len(piece.text) + 2
    return "\n\n".join(piece.text for piece in pieces), tuple(headings)
