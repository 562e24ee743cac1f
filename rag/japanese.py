"""Japanese text helpers: NFKC normalisation for matching, and fugashi tokens for BM25.

Normalisation is for comparison only. Stored and quoted text keeps its original characters, so a
quote stays verbatim; both sides of a match are normalised the same way here.
"""

from __future__ import annotations

import csv
import os
import queue
import re
import threading
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import NamedTuple

# UniDic part-of-speech (pos1) values that carry no topic: particles, auxiliaries, symbols, blanks.
DROPPED_POS = frozenset({"助詞", "助動詞", "補助記号", "記号", "空白"})

# Words that frame a question (asking for a name, an abbreviation, a language) or point back to an
# earlier turn (それ, 同社) but say nothing about its topic; a passage that answers rarely repeats them.
QUESTION_WORDS = frozenset(
    "何 なに どれ くらい ぐらい どの どこ 誰 だれ いつ いくつ いくら どう どんな どのよう なぜ どうして "
    "ある いる する し さ れ れる られる なる こと もの よう とき 程度 ます です 教え 知り 教える 知る くださる "
    "名前 名称 正式 略 略称 意味 英語 日本語 "
    "それ これ あれ その この あの そこ ここ 彼 彼ら 彼女 同社".split()
)


def normalize(text: str) -> str:
    """NFKC + lower case: full-width letters and digits match their ASCII forms (ＡＩ == ai, ３ == 3)."""
    return unicodedata.normalize("NFKC", text).lower()


class TaggerPool:
    """fugashi taggers, each used by one thread at a time, at most one per core.

    A tagger is not thread safe and holds about 37 MiB of its own: one per thread made the service grow with
    every thread of its pool (1.0 -> 3.2 GB over 300 requests at c=8 on a 20-article index).
    """

    def __init__(self, size: int):
        self._size, self._made = size, 0
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()

    @contextmanager
    def tagger(self) -> Iterator:
        try:
            tagger = self._free.get_nowait()
        except queue.Empty:
            with self._lock:
                make = self._made < self._size
                self._made += make
            if make:
                import fugashi

                tagger = fugashi.Tagger()  # unidic-lite's dictionary
            else:
                tagger = self._free.get()
        try:
            yield tagger
        finally:
            self._free.put(tagger)


_taggers = TaggerPool(os.cpu_count() or 1)


class Word(NamedTuple):
    surface: str
    feature_raw: str  # UniDic's features, comma separated (`word_fields`)


def tagged(text: str) -> list[Word]:
    """The tagger's words for the text, copied out: a node is valid only while its tagger is held."""
    with _taggers.tagger() as tagger:
        return [Word(w.surface, w.feature_raw) for w in tagger(text)]


# Verbs and adjectives are matched by dictionary form in their own spelling (UniDic orthBase):
# 作った / 作られる / 作ります all meet at 作る.
INFLECTING_POS = frozenset({"動詞", "形容詞"})
# What the BM25 index holds; an index built with another analysis must be rebuilt (`Index.open` checks).
BM25_ANALYSIS = ("fugashi + unidic-lite, NFKC + lower case; content words (orthBase for verbs and "
                 "adjectives, else surface) + adjacent content-word bigrams")


# The UniDic fields read (unidic-lite's 17), by position in the word's raw feature string.
POS1, POS2, LEMMA, ORTH_BASE = 0, 1, 7, 10


def word_fields(word: Word) -> list[str]:
    """The word's features as strings. Splitting the raw string once beats fugashi's named tuple, which parses
    every field: the BM25 terms of the shared corpus's 93,517 documents took 121 s instead of 285 s, and were
    identical, every one compared."""
    raw = word.feature_raw
    fields = next(csv.reader([raw])) if '"' in raw else raw.split(",")  # a quoted field may hold a comma
    return fields + [""] * (ORTH_BASE + 1 - len(fields))  # unknown words have fewer fields


def _term(word, fields: list[str]) -> str:
    if fields[POS1] in INFLECTING_POS and fields[ORTH_BASE]:
        return normalize(fields[ORTH_BASE])
    return word.surface


def _loanword(fields: list[str]) -> str | None:
    """The Latin spelling UniDic gives a katakana loanword (lemma マイクロ-micro), or None."""
    _, dash, spelling = fields[LEMMA].partition("-")
    return spelling.lower() if dash and spelling.isascii() and spelling.isalpha() else None


def analyse_terms(text: str) -> tuple[list[str], list[str]]:
    """One pass of the tagger: the content words, and the Latin spellings of its runs of loanwords.

    UniDic splits マイクロソフト into マイクロ-micro + ソフト-soft: joined, the run reads microsoft, so
    a passage in katakana meets a question in Latin script (and the other way round) in the evidence
    check. BM25 does not index them: on JSQuAD dev they cost R@1 0.927 -> 0.924.
    """
    terms, spellings, run = [], [], []
    for word in tagged(normalize(text)):
        fields = word_fields(word)
        spelling = _loanword(fields)
        if spelling:
            run.append(spelling)
        elif run:
            spellings.append("".join(run))
            run = []
        if fields[POS1] not in DROPPED_POS and word.surface.strip():
            terms.append(_term(word, fields))
    if run:
        spellings.append("".join(run))
    return terms, spellings


def tokenize(text: str) -> list[str]:
    """Content words of the text, normalised (particles, auxiliaries, symbols dropped)."""
    return analyse_terms(text)[0]


def with_bigrams(tokens: list[str] | tuple[str, ...]) -> list[str]:
    """Unigrams plus adjacent pairs: 東京 スカイ ツリー also matches as 東京スカイ and スカイツリー.

    UniDic splits compounds finely; the pairs restore phrase matches (measured on JSQuAD dev, hybrid
    R@1 0.914 -> 0.931; allforces dev article hit@1 0.907 -> 0.977).
    """
    return [*tokens, *(a + b for a, b in zip(tokens, tokens[1:]))]


def bm25_document_terms(text: str) -> list[str]:
    return with_bigrams(tokenize(text))


# ---------------------------------------------------------------- named things (the subject check)

# Model and company names in Latin script, with a version joined on: GPT-6, Grok 4, Gemini 2.5, K2.
LATIN_NAME = re.compile(r"[a-z][a-z0-9]*(?:[-. ]?\d[a-z0-9.]*)*")
# Separators that spellings of one name differ in: GPT-6 / GPT6 / ＧＰＴ－６, Grok 4 / Grok4, ジオ・プラットフォームズ.
NAME_SEPARATORS = re.compile(r"[\s\-‐‑–—.・･_/]+")


def name_key(text: str) -> str:
    """The form names are compared in: NFKC, lower case, no separators."""
    return NAME_SEPARATORS.sub("", normalize(text))


def names(text: str) -> tuple[str, ...]:
    """The named things of a text as keys: Latin-script names and proper nouns (UniDic 固有名詞).

    Years are not among them: 「2028年に登場予定の…」 asks about a date, which the type check and
    coverage weigh; a passage that answers may name the year only in its article's date.
    """
    normalized = normalize(text)
    found = [name_key(m.group()) for m in LATIN_NAME.finditer(normalized)]
    found += [w.surface for w in tagged(normalized)
              if word_fields(w)[POS2] == "固有名詞" and not w.surface.isascii()]
    return tuple(dict.fromkeys(n for n in found if n))


class Said:
    """What a passage or sentence says, from one pass of the tagger.

    For coverage, a term is said when it is one of the content words or loanword spellings, or, written
    in Japanese script, when it occurs inside the text: 月 in 月間, 研修 in 研修期間 (UniDic keeps such
    compounds whole). For the subject check, `names` is the text in name form followed by the Latin
    spellings of its loanwords, so a name asked in either script is found: マイクロソフト also reads
    microsoft.
    """

    def __init__(self, text: str):
        terms, spellings = analyse_terms(text)
        self.words, self.text = {*terms, *spellings}, normalize(text)
        self.names = name_key(text) + "\n" + "\n".join(spellings)

    def __contains__(self, term: str) -> bool:
        return term in self.words or (not term.isascii() and term in self.text)


@lru_cache(maxsize=4096)
def said(text: str) -> Said:
    """`Said(text)`, kept for the passages one ask checks several times (subject check, coverage, answer)."""
    return Said(text)


# ---------------------------------------------------------------- sentences that are not statements

# A sentence that asks the reader something or talks to them is not an answer: the corpus is full of
# 「あなたも…感じたのではないでしょうか？」 and 「…インフレ状態だからさ。」.
ASKS = re.compile(r"[?？][」』）)]*\s*$")
ADDRESSES_READER = re.compile(
    r"あなた|皆さん|皆様|みなさん|読者の|でしょうか|ませんか|ではないか|じゃないか|だろうか|かもね"
    r"|(?:よね|かな|からさ|んだよ|だよ|ですよね|でしょう?ね)[。！!…]*\s*$")


# A sentence that opens by pointing back (「このプロジェクトは…」「これを受け…」) says its subject in the sentence before.
REFERS_BACK = re.compile(r"(?:この|その|これ|それ|こうした|こう|同社|同氏|同年|同国|彼ら?|彼女)")


def refers_back(sentence: str) -> bool:
    return bool(REFERS_BACK.match(sentence.lstrip()))


# A heading or list stub: a short line with no sentence end and no figure (「今後の展望」, 「主な特徴」).
# A labelled figure (「総投資額: 1億4000万円」) is kept: it states something.
SENTENCE_END = re.compile(r"[。．.！!？?][」』）)\]]*$")
HEADING_MAX_CHARS = 25


def is_heading(sentence: str) -> bool:
    text = sentence.strip()
    return len(text) < HEADING_MAX_CHARS and not SENTENCE_END.search(text) and not re.search(r"\d", text)


def speaks_to_reader(sentence: str) -> bool:
    """A question to the reader, or an aside addressed to them, rather than a statement of fact."""
    text = normalize(sentence).strip()
    return bool(ASKS.search(text) or ADDRESSES_READER.search(text))
