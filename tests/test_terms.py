"""The BM25 term counts: rows replaced and appended give what counting the documents afresh gives."""

from __future__ import annotations

import random
from collections import Counter

from rag.index.terms import BM25, TermCounts


def rows_of(counts: TermCounts) -> list[list[tuple[str, int]]]:
    return [sorted((counts.vocab[i], int(c)) for i, c in zip(counts.term_ids[counts.indptr[r]:counts.indptr[r + 1]],
                                                              counts.counts[counts.indptr[r]:counts.indptr[r + 1]]))
            for r in range(counts.rows)]


def test_replacing_and_appending_rows_equals_counting_afresh():
    rng = random.Random(1)
    words = [f"語{i}" for i in range(50)]

    def document() -> list[str]:
        return [rng.choice(words) for _ in range(rng.randint(0, 8))]

    for _ in range(300):
        documents = [document() for _ in range(rng.randint(0, 12))]
        counts = TermCounts.of(documents)
        assert rows_of(counts) == [sorted(Counter(d).items()) for d in documents]
        total = rng.randint(0, 16)
        changes = {r: document() for r in rng.sample(range(total), rng.randint(0, total))}
        wanted = [changes[r] if r in changes else documents[r] if r < len(documents) else [] for r in range(total)]
        assert rows_of(counts.replaced(changes, total)) == [sorted(Counter(d).items()) for d in wanted]


def test_scores_and_statistics_leave_out_empty_rows():
    """A retired row (no document) changes nothing: the scores are those of the documents alone."""
    documents = [["富士山", "高さ", "富士山"], ["将棋", "ルール"], ["富士山", "世界遺産"]]
    alone = BM25(TermCounts.of(documents), 0.9, 0.4)
    with_retired = BM25(TermCounts.of(documents).replaced({1: [], 4: ["将棋"]}, 5).replaced({4: []}, 5), 0.9, 0.4)
    assert alone.documents == 3 and with_retired.documents == 2
    kept = BM25(TermCounts.of([documents[0], documents[2]]), 0.9, 0.4)
    scores = with_retired.scores(["富士山", "世界遺産"])
    assert scores[[0, 2]].tolist() == kept.scores(["富士山", "世界遺産"]).tolist()
    assert scores[[1, 3, 4]].tolist() == [0, 0, 0]
    assert with_retired.idf("富士山") == kept.idf("富士山") and with_retired.idf("将棋") == kept.idf("未知語")
