"""BM25 over stored term counts: one row of counts per passage, kept from generation to generation.

bm25s bakes the corpus statistics (document count, average length, document frequencies) into every stored
score, so one new article meant re-scoring all 93,517 passages (about 30 s on 2 cores). Here a generation
stores the raw counts, rows are replaced or appended for what changed, and the statistics are taken when the
index is opened. The scores are bm25s's "lucene" ones, computed the same way (float64, kept as float32,
summed in float32 term by term), so rankings match a fresh bm25s index.

A row with no counts is a passage no article carries any more: it never scores and no statistic counts it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VOCAB = "vocab.txt"  # one term a line: no term holds a line break (the analysis drops white space)
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
        (folder / VOCAB).write_text("\n".join(self.vocab), encoding="utf-8")
        for name in ARRAYS:
            np.save(folder / f"{name}.npy", getattr(self, name))

    @classmethod
    def load(cls, folder: Path) -> "TermCounts":
        text = (folder / VOCAB).read_text(encoding="utf-8")
        counts = cls(text.split("\n") if text else [], *(np.load(folder / f"{name}.npy") for name in ARRAYS))
        counts.check()
        return counts

    def check(self) -> None:
        """ValueError unless the arrays describe a matrix over the vocabulary (scipy trusts them: a damaged file
        would crash the process)."""
        indptr, ids = self.indptr, self.term_ids
        if not (indptr.ndim == ids.ndim == self.counts.ndim == 1 and len(indptr) >= 1 and indptr[0] == 0
                and indptr[-1] == len(ids) == len(self.counts) and (np.diff(indptr) >= 0).all()
                and (not len(ids) or (0 <= ids.min() and ids.max() < len(self.vocab)))):
            raise ValueError("the term counts do not fit together")

    def replaced(self, rows: dict[int, Sequence[str]], total: int) -> "TermCounts":
        """These counts with `rows` (row -> document terms; empty: no document) set and `total` rows in all
        (rows past the current end are appended; rows neither kept nor given are empty). The rows left alone are
        copied a run at a time, so an update of a few rows costs a few copies of the arrays."""
        position = dict(zip(self.vocab, range(len(self.vocab))))
        vocab = list(self.vocab)
        kept = min(self.rows, total)
        pieces_ids, pieces_counts, lengths = [], [], []
        start = 0  # the next row not yet copied
        for row in sorted(rows):
            if start < min(row, kept):  # the rows before this one, as they are
                pieces_ids.append(self.term_ids[self.indptr[start]:self.indptr[min(row, kept)]])
                pieces_counts.append(self.counts[self.indptr[start]:self.indptr[min(row, kept)]])
                lengths.append(np.diff(self.indptr[start:min(row, kept) + 1]))
            if row > kept:  # rows between the end of these counts and an appended one: empty
                lengths.append(np.zeros(row - max(start, kept), np.int64))
            counted = Counter(rows[row])
            for term in counted:
                if term not in position:
                    if "\n" in term:
                        raise ValueError(f"a BM25 term with a line break: {term!r}")
                    position[term] = len(vocab)
                    vocab.append(term)
            pieces_ids.append(np.array([position[t] for t in counted], np.int32))
            pieces_counts.append(np.array(list(counted.values()), np.int32))
            lengths.append(np.array([len(counted)], np.int64))
            start = row + 1
        if start < kept:
            pieces_ids.append(self.term_ids[self.indptr[start]:self.indptr[kept]])
            pieces_counts.append(self.counts[self.indptr[start]:self.indptr[kept]])
            lengths.append(np.diff(self.indptr[start:kept + 1]))
        if total > max(start, kept):
            lengths.append(np.zeros(total - max(start, kept), np.int64))
        indptr = np.concatenate([[0], np.cumsum(np.concatenate(lengths or [np.zeros(0, np.int64)]))]).astype(
            np.int64, copy=False)
        return TermCounts(vocab, indptr, np.concatenate(pieces_ids or [np.zeros(0, np.int32)]),
                          np.concatenate(pieces_counts or [np.zeros(0, np.int32)]))

    @classmethod
    def of(cls, documents: Sequence[Sequence[str]]) -> "TermCounts":
        return cls.empty().replaced(dict(enumerate(documents)), len(documents))


class BM25:
    """Scores of an analysed query against every row, with the statistics of the rows that have a document."""

    def __init__(self, terms: TermCounts, k1: float, b: float):
        import scipy.sparse

        self.k1, self.b = k1, b
        self.vocab = dict(zip(terms.vocab, range(len(terms.vocab))))
        rows = terms.rows
        by_row = scipy.sparse.csr_matrix((terms.counts, terms.term_ids, terms.indptr),
                                         shape=(rows, max(len(terms.vocab), 1)))
        self.lengths = np.asarray(by_row.sum(axis=1, dtype=np.int64)).ravel()  # terms per document, repeats included
        live = np.diff(terms.indptr) > 0
        self.documents = int(live.sum())
        self.average_length = self.lengths[live].mean() if self.documents else 0.0
        matrix = by_row.tocsc()
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
