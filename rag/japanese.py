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
    return tuple(tokenize(text))
