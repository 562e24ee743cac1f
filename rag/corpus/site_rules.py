"""Named cleanup rule sets for sites whose posts carry more than Markdown, and `clean_body`, which applies one.

A rule set is a `SiteRules`: it hooks into the generic Markdown-to-text pipeline of `markdown.py`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from types import MappingProxyType

from rag.corpus.markdown import Block, Piece, SiteRules, markdown_to_text, render_inline
from rag.errors import InvalidSetting
from rag.types import Heading

_MIN_REPEAT_CHARS = 15  # shorter paragraphs (list items, "まとめ") and sentences legitimately recur
_REPEAT_COVERAGE = 0.9  # share of a paragraph's sentences already seen that makes it a repeat
_CTA_PITCH_MAX = 2  # paragraphs between a call-to-action heading and its button
_BLURB_MAX_CHARS = 80  # a book blurb: one short line without sentence-final punctuation

# A run of TeX sub/superscript debris (`^{}_{}^{}…`, 24 k characters in one post).
_TEX_DEBRIS_RE = re.compile(r"[_^{}$]{4,}")
_END_MARKER_RE = re.compile(r"-{3}END-{3}")
_CONFLICT_MARKER_RE = re.compile(r"^(?:<{7}|>{7})(?:\s.*)?$")  # the `=======` middle reads as a rule
# Some posts repeat the whole article flattened onto one line ("… --- ### 見出し 本文。 * 項目 **[書名](…)** …").
# Such a line is recognised by a heading or rule marker in mid-line, or a list marker after a sentence;
# breaking it before every block marker lets the boilerplate and repeat rules see the pieces.
_FLATTENED_MARK_RE = re.compile(
    r"[ \t\u3000](?<=[^\s|][ \t\u3000])[ \t\u3000]*(?:#{1,6}|-{3,})[ \t]|[。！？][ \t\u3000]+[-*+][ \t]"
)  # starts with a character class, not a lookbehind, so the scan can skip ahead quickly
_FLATTENED_BREAK_RE = re.compile(r"(?<=[^\s|])[ \t\u3000]+(?=(?:#{1,6}|-{3,}|[-*+])[ \t]|\*\*\[|\*※)")

# Boilerplate. Navigation sections are a heading followed by link entries (and book blurbs).
_NAV_HEADING_RE = re.compile(r"^(?:関連記事|あわせて読みたい|この記事に関連するおすすめ書籍|おすすめ書籍|目次)\s*[:：]?$")
_LINK_ENTRY_RE = re.compile(r"^\s*(?:[-*+]\s+|\d+\.\s+)?(?:\*\*|__)?\[[^\]]*\]\(")
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
# Whitespace runs are matched from their start only (a long run was rescanned from every position).
_CITE_RE = re.compile(r"(?<![ \t])[ \t]*\[(?:cite(?:_start|_end)?(?::[^\[\]]*)?|参照データ[^\[\]]*)\]")

# Only for comparing paragraphs: markup remnants and the "..." of restarted paragraphs don't count.
_KEY_IGNORED_RE = re.compile(r"[\s*#>|/\-_~.]+")
_KEY_SENTENCE_RE = re.compile(r"[^。！？!?]+[。！？!?]*")


class AllforcesRules(SiteRules):
    """The ALLFORCES blog (ai-media.co.jp): its posts are machine-written, so besides site boilerplate
    (related-article lists, book ads, calls to action) they carry generation artefacts (leaked prompt
    lines, `---END---`, the assistant's refusals, `[cite: …]` markers, merge-conflict markers, TeX debris,
    the article flattened onto one line) and paragraphs the generator repeated."""

    max_heading_chars = 150  # a longer "heading" is a paragraph flattened onto the heading line

    def clean_markup(self, text: str) -> str:
        return _TEX_DEBRIS_RE.sub("", text)

    def clean_text(self, text: str) -> str:
        # Prompt lines go before the `---END---` markers become paragraph breaks: one of them asks for the marker.
        text = _unflatten(_END_MARKER_RE.sub("\n\n", _drop_lines(text, _is_prompt_line)))
        return _drop_lines(text, lambda line: bool(_CONFLICT_MARKER_RE.match(line.strip())))

    def clean_blocks(self, blocks: list[Block]) -> list[Block]:
        """Drop navigation sections, affiliate disclaimers and calls to action with their pitch."""
        kept: list[Block] = []
        pending = list(reversed(blocks))  # a stack, so a navigation section can hand back the prose after it
        while pending:
            block = pending.pop()
            if block.kind == "heading" and _NAV_HEADING_RE.match(render_inline(block.text, self)):
                _skip_navigation(pending)
                kept.append(Block("rule", []))  # the removed section still separates its neighbours
            elif block.kind == "text" and _CTA_RE.search(block.text):
                _drop_cta_pitch(kept)
            elif not (block.kind == "text" and _DISCLAIMER_RE.match(block.text)):
                kept.append(block)
        return kept

    def clean_inline(self, text: str) -> str:
        return _CITE_RE.sub("", text)

    def clean_paragraph(self, text: str) -> str:
        """Remove the sentences in which the generator talks to its user instead of writing the article."""
        if not _CHATTER_RE.search(text):
            return text
        sentences = _SENTENCE_RE.findall(text)
        kept = "".join(sentence for sentence in sentences if not _CHATTER_RE.search(sentence))
        return "\n".join(line.strip() for line in kept.split("\n") if line.strip())

    def clean_pieces(self, pieces: list[Piece]) -> list[Piece]:
        """Drop paragraphs whose text already appeared earlier in the article.

        "Appeared" means contained in everything kept so far, so a paragraph repeated whole, a truncated
        copy and a copy flattened across several earlier paragraphs all count.
        """
        kept: list[Piece] = []
        seen = ""
        for piece in pieces:
            key = _compare_key(piece.text)
            if not piece.heading_level and len(piece.text) >= _MIN_REPEAT_CHARS and _is_repeat(key, seen):
                continue
            seen += key
            kept.append(piece)
        return kept


RULE_SETS: Mapping[str, SiteRules] = MappingProxyType(
    {
        # The shared corpus: everything above.
        "allforces": AllforcesRules(),
        # A hand-written Jekyll blog has none of those artefacts, and a rule tuned to them (a "目次" list,
        # a paragraph that restates an earlier one) would cut its real text: generic Markdown-to-text only.
        "none": SiteRules(),
    }
)


def rule_set(name: str) -> SiteRules:
    """The rule set called `name`; `InvalidSetting` naming the available ones for any other name."""
    try:
        return RULE_SETS[name]
    except KeyError:
        available = ", ".join(sorted(RULE_SETS))
        raise InvalidSetting(f"unknown site rule set {name!r}: use one of {available} (set RAG_SITE_RULES)") from None


def clean_body(markdown: str, *, rules: str) -> tuple[str, tuple[Heading, ...]]:
    """Plain text of a post body and its headings with offsets, cleaned with the rule set called `rules`."""
    return markdown_to_text(markdown, rule_set(rules))


def _drop_lines(text: str, unwanted: Callable[[str], bool]) -> str:
    return "\n".join(line for line in text.split("\n") if not unwanted(line))


def _is_prompt_line(line: str) -> bool:
    return bool(_PROMPT_MARKER_RE.match(line) or _PROMPT_LINE_RE.search(line))


def _unflatten(text: str) -> str:
    if not _FLATTENED_MARK_RE.search(text):
        return text
    lines = text.split("\n")
    return "\n".join(_FLATTENED_BREAK_RE.sub("\n", line) if _FLATTENED_MARK_RE.search(line) else line for line in lines)


def _skip_navigation(pending: list[Block]) -> None:
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
                pending[-1] = Block("text", block.lines[count:])
                return
        else:
            return
        pending.pop()


def _is_blurb(line: str) -> bool:
    """A book's one-line description: short, no sentence-final punctuation."""
    return len(line.strip()) <= _BLURB_MAX_CHARS and not _SENTENCE_END_RE.search(line)


def _drop_cta_pitch(kept: list[Block]) -> None:
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


def _compare_key(text: str) -> str:
    # NFKC here only: the body keeps its characters, but `４０％` repeats `40%`.
    return _KEY_IGNORED_RE.sub("", unicodedata.normalize("NFKC", text))


def _is_repeat(key: str, seen: str) -> bool:
    """Contained in `seen`, or nearly all of its sentences are: re-generated copies differ in a few words."""
    if key in seen:
        return True
    sentences = [sentence for sentence in _KEY_SENTENCE_RE.findall(key) if len(sentence) >= _MIN_REPEAT_CHARS]
    total = sum(map(len, sentences))
    covered = sum(len(sentence) for sentence in sentences if sentence in seen)
    return total > 0 and covered >= _REPEAT_COVERAGE * total
