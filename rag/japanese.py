"""Japanese text helpers: NFKC normalisation for matching, and fugashi tokens for BM25.

Normalisation is for comparison only. Stored and quoted text keeps its original characters, so a
quote stays verbatim; both sides of a match are normalised the same way here.
"""

from __future__ import annotations

import threading
import unicodedata
from functools import lru_cache

# UniDic part-of-speech (pos1) values that carry no topic: particles, auxiliaries, symbols, blanks.
DROPPED_POS = frozenset({"助詞", "助動詞", "補助記号", "記号", "空白"})

# Words that frame a question (asking for a name, an abbreviation, a language) or point back to an
# earlier turn (それ, 同社) but say nothing about its topic; a passage that answers rarely repeats them.
QUESTION_WORDS = frozenset(
    "何 なに どれ くらい ぐらい どの どこ 誰 だれ いつ いくつ いくら どう どんな どのよう なぜ どうして "
    "ある いる する し さ れ れる られる なる こと もの よう とき 程度 ます です 教え 知り "
    "名前 名称 正式 略 略称 意味 英語 日本語 "
    "それ これ あれ その この あの そこ ここ 彼 彼ら 彼女 同社".split()
)

_local = threading.local()


def normalize(text: str) -> str:
    """NFKC + lower case: full-width letters and digits match their ASCII forms (ＡＩ == ai, ３ == 3)."""
    return unicodedata.normalize("NFKC", text).lower()


def _tagger():
    # fugashi taggers are not thread safe; one per thread (the service answers concurrently).
    tagger = getattr(_local, "tagger", None)
    if tagger is None:
        import fugashi

        tagger = _local.tagger = fugashi.Tagger()  # unidic-lite's dictionary
    return tagger


def tokenize(text: str) -> list[str]:
    """BM25 tokens: normalised surface forms of content words (particles, auxiliaries, symbols dropped)."""
    return [word.surface for word in _tagger()(normalize(text)) if word.feature.pos1 not in DROPPED_POS and word.surface.strip()]


@lru_cache(maxsize=4096)
def tokenize_query(text: str) -> tuple[str, ...]:
    """BM25 tokens of a question, without the words that only frame it (何, いつ, 名前, ...)."""
    return tuple(t for t in tokenize(text) if t not in QUESTION_WORDS)
