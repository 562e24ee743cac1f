"""BM25 over stored term counts: one row of counts per passage, kept from generation to generation.

bm25s bakes the corpus statistics (document count, average length, document frequencies) into every stored
score, so one new article meant re-scoring all 93,517 passages (about 30 s on 2 cores). Here a generation
stores the raw counts, rows are replaced or appended for what changed, and the statistics are taken when the
index is opened. The scores are bm25s's "lucene" ones, computed the same way (float64, kept as float32,
summed in float32 term by term), so rankings match a fresh bm25s index.

A row with no counts is a passage no article carries any more: it never scores and no statistic counts it.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VOCAB = "vocab.json"
ARRAYS = ("indptr", "term_ids", "counts")


@dataclass
class TermCounts:
    """Term counts, row per passage (a CSR matrix over `vocab`)."""

    vocab: list[str]
    indptr: np.ndarray  # int64, rows + 1
    term_ids: np.ndarray  # int32
    counts: np.ndarray  # int32

    @property
    def rows(self) -> int:
        return len(self.indptr) - 1

    @classmethod
    def empty(cls) -> "TermCounts":
        return cls([], np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int32))

    def save(self, folder: Path) -> None:
        folder.mkdir()
        (folder / VOCAB).write_text(json.dumps(self.vocab, ensure_ascii=False), encoding="utf-8")
        for name in ARRAYS:
            np.save(folder / f"{name}.npy", getattr(self, name))

    @classmethod
    def load(cls, folder: Path) -> "TermCounts":
        vocab = json.loads((folder / VOCAB).read_text(encoding="utf-8"))
        return cls(vocab, *(np.load(folder / f"{name}.npy") for name in ARRAYS))

    def replaced(self, rows: dict[int, Sequence[str]], total: int) -> "TermCounts":
        """These counts with `rows` (row -> document terms; empty: no document) set and `total` rows in all
        (rows past the current end are appended; rows neither kept nor given are empty)."""
        position = {term: i for i, term in enumerate(self.vocab)}
        vocab = list(self.vocab)
        lengths = np.zeros(total, np.int64)
        kept = min(self.rows, total)
        lengths[:kept] = np.diff(self.indptr)[:kept]
        keep_entry = np.ones(len(self.term_ids), bool)
        for row in rows:
            if row < kept:
                keep_entry[self.indptr[row]:self.indptr[row + 1]] = False
                lengths[row] = 0
        keep_entry[self.indptr[kept]:] = False
        new_ids, new_counts, new_rows = [], [], []
        for row in sorted(rows):
            counted = Counter(rows[row])
            for term, n in counted.items():
                if term not in position:
                    position[term] = len(vocab)
                    vocab.append(term)
                new_ids.append(position[term])
                new_counts.append(n)
            new_rows.extend([row] * len(counted))
            lengths[row] = len(counted)
        # old entries keep their rows; the given ones join theirs: sort every entry by row (stable)
        old_rows = np.repeat(np.arange(self.rows, dtype=np.int64), np.diff(self.indptr))[keep_entry]
        all_rows = np.concatenate([old_rows, np.array(new_rows, np.int64)])
        order = np.argsort(all_rows, kind="stable")
        term_ids = np.concatenate([self.term_ids[keep_entry], np.array(new_ids, np.int32)])[order]
        counts = np.concatenate([self.counts[keep_entry], np.array(new_counts, np.int32)])[order]
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return TermCounts(vocab, indptr, term_ids.astype(np.int32), counts.astype(np.int32))

    @classmethod
    def of(cls, documents: Sequence[Sequence[str]]) -> "TermCounts":
        return cls.empty().replaced(dict(enumerate(documents)), len(documents))


class BM25:
    """Scores of an analysed query against every row, with the statistics of the rows that have a document."""

    def __init__(self, terms: TermCounts, k1: float, b: float):
        import scipy.sparse

        self.k1, self.b = k1, b
        self.vocab = {term: i for i, term in enumerate(terms.vocab)}
        rows = terms.rows
        self.lengths = np.zeros(rows, np.int64)  # terms in each document, repeats included
        if len(terms.counts):
            np.add.at(self.lengths, np.repeat(np.arange(rows), np.diff(terms.indptr)), terms.counts)
        live = np.diff(terms.indptr) > 0
        self.documents = int(live.sum())
        self.average_length = self.lengths[live].mean() if self.documents else 0.0
        matrix = scipy.sparse.csr_matrix((terms.counts, terms.term_ids, terms.indptr),
                                         shape=(rows, max(len(terms.vocab), 1))).tocsc()
        self._postings = (matrix.indptr, matrix.indices, matrix.data)
        self.document_frequency = np.diff(matrix.indptr)
        df = self.document_frequency.astype(np.float64)
        self._idf = np.log(1 + (self.documents - df + 0.5) / (df + 0.5)).astype(np.float32)
        self._norm = (k1 * ((1 - b) + b * self.lengths / self.average_length) if self.documents
                      else np.ones(rows))  # the length part of each row's denominator
        self.rows = rows

    def idf(self, term: str) -> float:
        """Of a term the corpus never uses too (document frequency 0)."""
        column = self.vocab.get(term)
        df = int(self.document_frequency[column]) if column is not None else 0
        return math.log(1 + (self.documents - df + 0.5) / (df + 0.5))

    def scores(self, query: Sequence[str]) -> np.ndarray:
        """float32 score of every row; terms outside the vocabulary add nothing, a repeated term counts again."""
        indptr, indices, data = self._postings
        scores = np.zeros(self.rows, np.float32)
        norm = self._norm
        for term in query:
            column = self.vocab.get(term)
            if column is None:
                continue
            docs = indices[indptr[column]:indptr[column + 1]]
            tf = data[indptr[column]:indptr[column + 1]].astype(np.float64)
            scores[docs] += (np.float64(self._idf[column]) * (tf / (norm[docs] + tf))).astype(np.float32)
        return scores
