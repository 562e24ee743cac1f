"""The question, analysed once per ask: what retrieval, the evidence check and the generators all read.

`analyse` derives everything the later steps need: the topic terms and their IDF weights (coverage), the
BM25 terms and the date intent (retrieval), the answer types and counter asked for (sentence choice, the
type check) and the named subjects (the subject check). In a conversation the retrieval query also carries the
previous question, since follow-ups rarely name their topic; the terms for coverage and answer choice
stay the new question's own.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, replace
from datetime import date
from functools import cached_property

from rag.japanese import QUESTION_WORDS, name_key, names, normalize, tokenize

# ---------------------------------------------------------------- what the question asks for

@dataclass(frozen=True)
class AnswerType:
    name: str
    asks: re.Pattern[str]  # in the (normalised) question: it asks for this type
    contains: re.Pattern[str]  # in a sentence: it carries an answer of this type
    span: re.Pattern[str] | None  # the short answer itself, where the type has one


UNITS = (r"%|％|パーセント|ポイント|メートル|キロメートル|センチ|ミリ|km|m|キロ|ドル|円|ユーロ|元|ウォン|人|名|台|基|個|社|件"
         r"|倍|回|分|秒|歳|種類|種|割|ヶ月|カ月|か月|ヵ月|年間|年|時間|日間|週間|日|gb|tb|mb|パラメータ|トークン|文字|語"
         r"|平方キロメートル|ヘクタール|トン|kg|t|g|行|枚|本|冊|席|位|カ国|ヶ国|か国|店舗|拠点|校|歩")
MEASURES = r"額|規模|割合|数|高さ|標高|面積|人口|速度|価格|長さ|重さ|量"
# 最低何年 / 何年以上 / 何年間 / 期間は: how long, answered by 7年 or 5年間 (not a date, and not a plain number)
DURATION_ASKED = r"(?:最低|最長|最短)何年|何年(?:前|後|目|以上|ほど|くらい|ぐらい|間)|期間(?:は|って)?\s*(?:ですか)?\s*[?]?\s*$"
ANSWER_TYPES: tuple[AnswerType, ...] = (
    AnswerType("date", re.compile(r"いつ|(?<!最低|最長|最短)何年(?!間|前|後|目|以上|ほど|くらい|ぐらい)|何月|何日(?!間)|時期|日付"),
               # 711年 and 紀元前4世紀 are dates too
               re.compile(r"\d{3,4}年|\d{1,2}月|\d{1,2}日|\d{1,2}世紀|紀元前"),
               re.compile(r"\d{4}年(?:\d{1,2}月(?:\d{1,2}日)?)?|\d{1,2}月\d{1,2}日|\d{1,2}月")),
    AnswerType("duration", re.compile(DURATION_ASKED), re.compile(r"\d[\d,.]*\s*(?:年|ヶ月|カ月|か月|週間|日間|時間)"),
               re.compile(r"(?:約|最大|最低|およそ|わずか)?\d[\d,.]*\s*(?:年間|年|ヶ月|カ月|か月|週間|日間|時間)(?:以上|以内|前|後)?")),
    AnswerType("quantity",
               # 何基 counts, 何基準 does not; a measure asks when it is the topic (「買収価格は？」「高さは何メートル？」),
               # not where it describes (「面積が大きい市は何市か」)
               re.compile(r"何[人台基個社件倍回分秒歳種割](?!準|野|類|会|路|湾|性)|いくつ|いくら|どれ(くらい|ほど|だけ)|どの(くらい|程度|規模)"
                          r"|何%|何パーセント|何文字"
                          r"|(?:" + MEASURES + r")(?:(?:は|って)?\s*(?:ですか)?\s*[?]?\s*$|(?:は|って).*何)"),
               # a quantity: a number that is not part of a date (2013年 answers いつ, not どれくらい)
               re.compile(r"(?<![\d,.])\d[\d,.]*(?![\d,.]|\s*[年月日])"),
               # not a year (2025年 is when, not how much)
               re.compile(r"(?:約|最大|最低|およそ|最大で|わずか)?(?<![\d,.])(?!(?:19|20)\d\d年)\d[\d,.]*(?:[万億兆千百]+)?"
                          r"\s*(?:" + UNITS + r")?", re.IGNORECASE)),
    AnswerType("reason", re.compile(r"なぜ|理由|どうして"), re.compile(r"ため|から|ので|理由|によって|により"), None),
    AnswerType("name", re.compile(r"名前|何という|何と呼|誰|だれ|どこ|どの(企業|会社|モデル|製品|ライセンス|シリーズ)|何ですか"),
               re.compile(r"[「『][^」』]+[」』]|[A-Za-z][A-Za-z0-9.\-]+|[ァ-ヴー]{3,}"),
               re.compile(r"(?<=「)[^」]+(?=」)|(?<=『)[^』]+(?=』)|[A-Za-z][A-Za-z0-9.\-]*(?: [A-Z0-9][A-Za-z0-9.\-]*)*"
                          r"|[ァ-ヴー]{3,}")),
)


# 何回 / 何人 / 何% ...: the unit the answer is counted in (何年, 何月, 何日 ask when, not how many)
COUNTER = re.compile(r"何(日間|時間|週間|ヶ月|カ月|か月|年間|人|台|基|個|社|件|倍|回|分|秒|歳|種類|割|%|パーセント|文字|枚|店舗|カ国|ヶ国)")


# The ways the corpus writes a unit: 2度 answers 何回, 58.4％ answers 何パーセント.
_SPELLED_ALIKE = ("回|度", "%|％|パーセント", "カ国|ヶ国|か国|ケ国|箇国", "ヶ月|カ月|か月|ヵ月|ケ月|箇月")
COUNTER_SPELLINGS = {unit: spellings for spellings in _SPELLED_ALIKE for unit in spellings.split("|")}


def asked_counter(normalized: str) -> str | None:
    match = COUNTER.search(normalized)
    return match.group(1) if match else None


def counted_in(counter: str) -> re.Pattern[str]:
    """A number counted in the unit (何回 wants 3回 or 3度)."""
    return re.compile(r"\d[\d,.]*\s*[万億]?\s*(?:" + COUNTER_SPELLINGS.get(counter, re.escape(counter)) + ")")


def answer_types(normalized: str) -> tuple[AnswerType, ...]:
    """What a sentence that answers must carry (a date, a quantity, a reason, a name)."""
    return tuple(t for t in ANSWER_TYPES if t.asks.search(normalized))


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
    answer_types: tuple[AnswerType, ...]
    query: Query  # what retrieval searches with (in a conversation: the previous question joined with this one)
    own_query: Query  # this question alone: the search when the conversation's topic has changed
    counter: str | None = None  # the unit a quantity is asked in (何回 -> 回)
    subjects: tuple[str, ...] = ()  # the named things it asks about (japanese.names): a passage must name them
    topic: tuple[str, ...] = ()  # in a conversation, the named things of the previous question
    cited: tuple[str, ...] = ()  # the articles the previous answer cited, or the one the reader is on

    @property
    def follows_up(self) -> bool:
        return self.query is not self.own_query

    @property
    def new_subjects(self) -> tuple[str, ...]:
        """Named things the conversation has not named yet: a follow-up with none keeps its topic."""
        return tuple(n for n in self.subjects if n not in self.topic)

    def alone(self) -> "Question":
        """The same question searched without the conversation's context: a new topic."""
        return replace(self, query=self.own_query, topic=(), cited=())

    @cached_property
    def _key(self) -> str:
        return name_key(self.text)

    def says(self, span: str) -> bool:
        """The question itself already says this span (in any script width or spacing)."""
        return name_key(span) in self._key

    def carries(self, answer_type: AnswerType, sentence: str) -> bool:
        """The sentence carries an answer of this type that the question does not already say: a sentence
        that repeats the question's own date or name restates the question rather than answering it."""
        return any(not self.says(m.group()) for m in answer_type.contains.finditer(sentence))

    def coverage(self, said: Container[str]) -> float:
        """The share of the question's IDF-weighted terms that a passage or sentence says (`japanese.said`)."""
        total = sum(self.weights[t] for t in self.terms)
        return sum(self.weights[t] for t in self.terms if t in said) / total if total else 0.0


TermWeight = Callable[[str], float]
# A name found in more than one passage in ten (AI, 日本) is the corpus' theme, not a question's subject:
# BM25's IDF of such a term is below ln(1 + 0.9 / 0.1).
SUBJECT_MIN_WEIGHT = math.log(10)


def subjects_of(text: str, term_weight: TermWeight) -> tuple[str, ...]:
    return tuple(name for name in names(text) if term_weight(name) >= SUBJECT_MIN_WEIGHT)


def analyse(text: str, term_weight: TermWeight, previous: str | None = None,
            cited: tuple[str, ...] = ()) -> Question:
    """Analyse `text` once; `previous` is the conversation's previous user question, if any, and `cited`
    the articles the previous answer cited (or the one the reader is on)."""
    tokens = tokenize(text)
    terms = tuple(dict.fromkeys(topic_words(tokens)))
    own = query_for(text, tokens)
    query, topic = own, ()
    if previous:
        joined = f"{previous} {text}"
        query, topic = query_for(joined, tokenize(joined)), subjects_of(previous, term_weight)
    normalized = normalize(text)
    return Question(text, normalized, terms, {t: term_weight(t) for t in terms}, answer_types(normalized), query, own,
                    asked_counter(normalized), subjects_of(text, term_weight), topic, tuple(cited))
