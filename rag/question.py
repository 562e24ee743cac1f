"""The question, analysed once per ask: what retrieval, the evidence check and the generators all read.

`analyse` tokenises the question once and derives everything the later steps need from those tokens:
the topic terms and their IDF weights (coverage), the BM25 terms and the date intent (retrieval), and the
answer types asked for (sentence choice). In a conversation the retrieval query also carries the
previous question, since follow-ups rarely name their topic; the terms for coverage and answer choice
stay the new question's own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import date

from rag.japanese import QUESTION_WORDS, normalize, tokenize

# ---------------------------------------------------------------- what the question asks for

ANSWER_TYPES: list[tuple[re.Pattern[str], re.Pattern[str]]] = [
    # (what the question asks, what a sentence that answers it contains)
    (re.compile(r"いつ|何年|何月|何日|時期|日付"), re.compile(r"\d{4}年|\d{1,2}月|\d{1,2}日")),
    (re.compile(r"何[人台基個社件倍回分秒歳種割]|いくつ|いくら|どれ(くらい|ほど|だけ)|どの(くらい|程度|規模)|何%|何パーセント"
                r"|何文字|金額|規模|割合|数は|高さ|標高|面積|人口|速度|価格|評価額|期間|長さ|重さ|量は"),
     # a quantity: a number that is not part of a date (2013年 answers いつ, not どれくらい)
     re.compile(r"(?<![\d,.])\d[\d,.]*(?![\d,.]|\s*[年月日])")),
    (re.compile(r"なぜ|理由|どうして"), re.compile(r"ため|から|ので|理由|によって|により")),
    (re.compile(r"名前|何という|何と呼|誰|だれ|どこ|どの(企業|会社|モデル|製品|ライセンス|シリーズ)|何ですか"),
     re.compile(r"[「『][^」』]+[」』]|[A-Za-z][A-Za-z0-9.\-]+|[ァ-ヴー]{3,}")),
]


def answer_types(normalized: str) -> tuple[re.Pattern[str], ...]:
    """Patterns a sentence that answers must contain (a date, a quantity, a reason, a name)."""
    return tuple(answer for asks, answer in ANSWER_TYPES if asks.search(normalized))


# ---------------------------------------------------------------- the period a question asks about

MONTH = re.compile(r"(20\d\d)年(\d{1,2})月")
YEAR = re.compile(r"(20\d\d)年")
RECENT = re.compile(r"最新|最近|直近|今年|今月|このところ")

RECENT_INTENT = "recent"
DateIntent = tuple[date, date] | str  # a [start, end) window, or RECENT_INTENT


def date_intent(question: str) -> DateIntent | None:
    """A [start, end) window for a named month or year, "recent" for 最新/最近/今年, else None."""
    text = normalize(question)
    if m := MONTH.search(text):
        year, month = int(m.group(1)), int(m.group(2))
        if 1 <= month <= 12:
            end = date(year + month // 12, month % 12 + 1, 1)
            return date(year, month, 1), end
    if RECENT.search(text):
        return RECENT_INTENT
    if m := YEAR.search(text):
        return date(int(m.group(1)), 1, 1), date(int(m.group(1)) + 1, 1, 1)
    return None


# ---------------------------------------------------------------- the analysed question


@dataclass(frozen=True)
class Query:
    """What retrieval searches with: the text to embed, its BM25 terms, the period it asks about."""

    text: str
    terms: tuple[str, ...]
    date_intent: DateIntent | None


def topic_words(tokens: list[str]) -> tuple[str, ...]:
    """The tokens without the words that only frame a question (何, いつ, 名前, それ, ...)."""
    return tuple(t for t in tokens if t not in QUESTION_WORDS)


def query_for(text: str, tokens: list[str]) -> Query:
    """BM25 terms are the topic words plus the pairs of adjacent topic words (東京 スカイ ツリー -> スカイツリー)."""
    pairs = (a + b for a, b in zip(tokens, tokens[1:]) if a not in QUESTION_WORDS and b not in QUESTION_WORDS)
    return Query(text, (*topic_words(tokens), *pairs), date_intent(text))


@dataclass(frozen=True)
class Question:
    text: str  # as asked
    normalized: str  # NFKC + lower case, for pattern matching
    terms: tuple[str, ...]  # distinct topic words, in order: what an answering passage should name
    weights: Mapping[str, float]  # IDF of each term over the index: rare words weigh most
    answer_types: tuple[re.Pattern[str], ...]
    query: Query  # what retrieval searches with (in a conversation: the previous question joined with this one)
    own_query: Query  # this question alone: the search when the conversation's topic has changed

    @property
    def follows_up(self) -> bool:
        return self.query is not self.own_query

    def alone(self) -> "Question":
        """The same question searched without the conversation's context."""
        return replace(self, query=self.own_query)

    def coverage(self, tokens: set[str]) -> float:
        """The share of the question's IDF-weighted terms among `tokens` (a passage's or a sentence's)."""
        total = sum(self.weights[t] for t in self.terms)
        return sum(self.weights[t] for t in self.terms if t in tokens) / total if total else 0.0


TermWeight = Callable[[str], float]


def analyse(text: str, term_weight: TermWeight, previous: str | None = None) -> Question:
    """Analyse `text` once; `previous` is the conversation's previous user question, if any."""
    tokens = tokenize(text)
    terms = tuple(dict.fromkeys(topic_words(tokens)))
    own = query_for(text, tokens)
    query = own
    if previous:
        joined = f"{previous} {text}"
        query = query_for(joined, tokenize(joined))
    normalized = normalize(text)
    return Question(text, normalized, terms, {t: term_weight(t) for t in terms}, answer_types(normalized), query, own)
