"""The default generator: answer with 1-3 sentences quoted verbatim from the retrieved passages.

Each candidate sentence of the top passages is scored on
- how much of the question's weighted vocabulary it covers (IDF weights from the index),
- its embedding similarity to the question (optional; the same model as retrieval),
- whether it carries what the question type asks for (a number, a date, a name, a reason),
- the rank of its passage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from rag.chunking import split_sentences
from rag.generators.base import Draft, Evidence, GeneratorDeps, Quote
from rag.generators.registry import register
from rag.japanese import normalize, tokenize, tokenize_query

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


@dataclass(frozen=True)
class ExtractiveConfig:
    passages: int = 4  # how many top passages supply candidate sentences
    max_sentences: int = 2
    min_chars: int = 8  # shorter fragments (headings, list stubs) are never the answer
    w_sentence: float = 1.0  # sentence coverage of the question's terms
    w_passage: float = 0.3  # coverage by the sentence's whole passage (context)
    w_similarity: float = 0.0  # embedding similarity (costs one model call per question)
    w_type: float = 0.2  # carries the asked-for answer type
    w_rank: float = 0.3  # 1 / (1 + passage rank)
    keep_ratio: float = 0.85  # further sentences are kept if they score this close to the best
    typed_ratio: float = 0.5  # a sentence of the asked-for type joins if it scores this close


def question_terms(question: str) -> list[str]:
    return list(dict.fromkeys(tokenize_query(question)))


def coverage(terms: list[str], weights: dict[str, float], tokens: set[str]) -> float:
    total = sum(weights[t] for t in terms)
    return sum(weights[t] for t in terms if t in tokens) / total if total else 0.0


def expected_types(question: str) -> list[re.Pattern[str]]:
    text = normalize(question)
    return [answer for asks, answer in ANSWER_TYPES if asks.search(text)]


class ExtractiveGenerator:
    name = "extractive"

    def __init__(self, deps: GeneratorDeps, config: ExtractiveConfig = ExtractiveConfig()):
        self.deps, self.config = deps, config

    def generate(self, evidence: Evidence) -> Draft:
        cfg = self.config
        terms = question_terms(evidence.question)
        weights = {t: self.deps.term_weight(t) for t in terms}
        wanted = expected_types(evidence.question)
        candidates: list[tuple[int, int, int]] = []  # (hit, start, end)
        features: list[tuple[float, float, float, float]] = []
        for rank, hit in enumerate(evidence.hits[: cfg.passages]):
            text = hit.chunk.text
            passage_cov = coverage(terms, weights, set(tokenize(text)))
            for start, end in split_sentences(text):
                sentence = text[start:end]
                if len(sentence) < cfg.min_chars:
                    continue
                type_match = sum(bool(p.search(sentence)) for p in wanted) / len(wanted) if wanted else 0.0
                candidates.append((rank, start, end))
                features.append((coverage(terms, weights, set(tokenize(sentence))), passage_cov, type_match,
                                 1.0 / (1 + rank)))
        if not candidates:
            return Draft("", abstained=True)
        f = np.array(features)
        scores = cfg.w_sentence * f[:, 0] + cfg.w_passage * f[:, 1] + cfg.w_type * f[:, 2] + cfg.w_rank * f[:, 3]
        if cfg.w_similarity and evidence.query_vector is not None:
            sentences = [evidence.hits[h].chunk.text[s:e] for h, s, e in candidates]
            scores = scores + cfg.w_similarity * (self.deps.embedder.encode_passages(sentences) @ evidence.query_vector)
        order = [int(i) for i in np.argsort(-scores)]
        best = scores[order[0]]
        chosen = [order[0]] + [i for i in order[1 : cfg.max_sentences] if scores[i] >= cfg.keep_ratio * best]
        # The best match often restates the question (「スカイツリーは電波塔です」) while a neighbour
        # carries the asked-for number, date or name with its topic left unsaid (「高さは634メートルで」):
        # make room for the best sentence that does, from the best sentence's own passage first.
        if wanted and not any(f[i, 2] == 1.0 for i in chosen):
            best_passage = candidates[order[0]][0]
            typed = min((i for i in order if f[i, 2] == 1.0 and scores[i] >= cfg.typed_ratio * best),
                        key=lambda i: (candidates[i][0] != best_passage, -scores[i]), default=None)
            if typed is not None:
                chosen = chosen[: cfg.max_sentences - 1] + [typed]
        # read in passage order: best passage first, sentences in their text order
        chosen.sort(key=lambda i: (candidates[i][0], candidates[i][1]))
        quotes = [Quote(*candidates[i]) for i in chosen]
        text = "".join(f"{evidence.hits[q.hit].chunk.text[q.start:q.end]}[{n}]" for n, q in enumerate(quotes, 1))
        return Draft(text, quotes)


@register("extractive")
def _create(deps: GeneratorDeps) -> ExtractiveGenerator:
    return ExtractiveGenerator(deps)
