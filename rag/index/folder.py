"""The folder store: an index as generations in a folder, FAISS (dense) + BM25 term counts + SQLite (passages).

Layout of an index folder:
    CURRENT              name of the live generation (replaced atomically)
    gen-<time>/          manifest.json, chunks.sqlite, dense.faiss, bm25/
    vectors.pending.sqlite  vectors a build has made but not yet committed (an interrupted build resumes)
    BUILDING.json        the running build's progress, for the service
A writer builds a new generation beside the live one and then swaps CURRENT, so a crash never leaves a
half index and a reader never sees one. Distinct chunk texts are stored, embedded and indexed once
("texts"); "chunks" map each article's passages to them. A writer lends itself the live generation's
chunks and vectors, so only new or changed passages reach the model.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import platform
import shutil
import sqlite3
import time
import zlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import date, datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np

from rag.embeddings import Embedder, vector_space
from rag.errors import IndexBusy, IndexDamaged, IndexNotBuilt, IndexWriteFailed, RagError
from rag.index.manifest import (BM25_DOCUMENTS, FORMAT_VERSION, BuildInfo, Counts, DenseInfo, Manifest, ModelInfo,
                                TermsInfo)
from rag.index.store import BuildProgress, Description, Passage, citing
from rag.index.terms import BM25, TermCounts
from rag.japanese import BM25_ANALYSIS, DROPPED_POS, tokenize, with_bigrams
from rag.types import Article, Chunk, Facets, Filters, Heading

log = logging.getLogger(__name__)

CURRENT = "CURRENT"
MANIFEST = "manifest.json"
STORE = "chunks.sqlite"
DENSE = "dense.faiss"
TERMS_DIR = "terms"
PENDING_VECTORS = "vectors.pending.sqlite"
PROGRESS = "BUILDING.json"
# Vectors are stored as float16 (exhaustive inner-product search): half the memory of float32 and 2.6-3.5x
# faster for one question, since the search only streams the vectors; 99.86% of the float32 top 10
# (bench/faiss_compression.py on the full corpus: 144 -> 72 MB, 8-10 -> 3 ms). An update re-adds the
# stored vectors, and float16 round-trips exactly, so updates never drift.
DENSE_STORAGE = "float16"
# An update keeps the rows of passages it removed (retired: never found, their vectors ready should the text
# come back); past this share of all rows the next update writes the generation whole, without them.
MAX_RETIRED_SHARE = 0.2
NEWEST_ARTICLES = 3  # offered on the chat page's empty screen

SCHEMA = """
CREATE TABLE articles (
    article_id TEXT PRIMARY KEY, path TEXT, title TEXT, date TEXT, url TEXT, categories TEXT, tags TEXT,
    author TEXT, excerpt TEXT, body TEXT, headings TEXT, content_hash TEXT, image TEXT);
CREATE TABLE texts (text_id INTEGER PRIMARY KEY, text_hash TEXT UNIQUE, text TEXT, n_articles INTEGER);
CREATE TABLE chunks (
    chunk_id INTEGER PRIMARY KEY, article_id TEXT, ordinal INTEGER, text_id INTEGER,
    char_start INTEGER, char_end INTEGER, heading_path TEXT);
CREATE INDEX chunks_by_text ON chunks(text_id);
CREATE INDEX chunks_by_article ON chunks(article_id, ordinal);
CREATE TABLE bm25_terms (document_hash TEXT PRIMARY KEY, terms BLOB);
"""


def text_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def _pointer(index_dir: Path) -> str | None:
    """The generation name CURRENT holds, or None when there is no CURRENT."""
    try:
        return (index_dir / CURRENT).read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


def _new_generation_name(index_dir: Path) -> str:
    """gen-<UTC time>, made unique: a clock that went back may repeat a name that is still on disk."""
    name = "gen-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    unique, n = name, 1
    while (index_dir / unique).exists():
        unique, n = f"{name}-{n}", n + 1
    return unique


REBUILD = "rebuild the index with `rag index --rebuild`"


def live_generation(index_dir: Path) -> Path:
    """The folder of the live generation; IndexNotBuilt with the command that builds one, or IndexDamaged when
    CURRENT names no complete generation."""
    try:
        name = _pointer(index_dir)
    except (OSError, UnicodeDecodeError):
        raise IndexDamaged(f"the index's {CURRENT} file cannot be read: {REBUILD}") from None
    if name is not None:
        if name in (".", "..") or Path(name).name != name:  # one folder of the index, never a path elsewhere
            raise IndexDamaged(f"the index's {CURRENT} does not name a generation: {REBUILD}")
        if not (index_dir / name / MANIFEST).is_file():
            raise IndexDamaged(f"the index's {CURRENT} names generation {name}, which is missing or incomplete: "
                               f"{REBUILD}")
        return index_dir / name
    if (index_dir / MANIFEST).is_file():  # a generation folder given directly
        return index_dir
    raise IndexNotBuilt(f"no index at {index_dir}: build one with `rag index --index {index_dir}`")


@contextmanager
def _reading(generation: Path, part: str) -> Iterator[None]:
    """IndexDamaged naming the generation's file for any failure to read it. A library's own message (C++
    source lines, absolute paths) stays in the log and the exception chain, out of HTTP bodies and the CLI line."""
    try:
        yield
    except RagError:
        raise
    except Exception as exc:  # noqa: BLE001  (faiss, numpy, scipy, sqlite and json each raise their own)
        log.info("reading %s/%s failed: %r", generation, part, exc)
        raise IndexDamaged(f"index generation {generation.name}: {part} cannot be read (truncated or corrupt): "
                           f"{REBUILD}") from exc


@dataclass(frozen=True)
class FolderConfig:
    path: Path
    bm25_k1: float  # BM25 parameters, recorded with the terms and applied when a generation is opened
    bm25_b: float
    # FAISS's threads (process-wide), None: its default of one per core. One question's search streams 72 MB
    # of vectors; spread over OpenMP threads that other requests' work or another process holds, it waits.
    search_threads: int | None = None


class BuildLock:
    """The index folder's build lock (an flock on `.lock`): one build at a time; IndexBusy for the second."""

    def __init__(self, index_dir: Path, what: str | None = None):
        """`what`: the index as the IndexBusy message names it (default: the folder)."""
        index_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(index_dir / ".lock", "w")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise IndexBusy(f"another `rag index` is already building {what or index_dir}") from None

    def release(self) -> None:
        self._file.close()  # closing the file releases the lock


class FolderStore:
    """The folder store as configured: the `StoreKind` of `rag/index/store.py`."""

    def __init__(self, config: FolderConfig):
        self.config = config
        self._held: BuildLock | None = None

    def open(self, embedder: Embedder | None = None) -> "FolderIndex":
        if self.config.search_threads:
            import faiss

            faiss.omp_set_num_threads(self.config.search_threads)
        return FolderIndex.open(self.config.path, embedder)

    @contextmanager
    def lock(self) -> Iterator[None]:
        self._held = BuildLock(self.config.path)
        try:
            yield
        finally:
            self._held.release()
            self._held = None

    def writer(self, embedder: Embedder, *, rebuild: bool) -> "FolderWriter":
        return FolderWriter(self.config, embedder, rebuild=rebuild, lock=self._held)

    def live_generation(self) -> str:
        return live_generation(self.config.path).name

    def manifest(self) -> Manifest:
        generation = live_generation(self.config.path)
        with _reading(generation, MANIFEST):
            return Manifest.read(generation / MANIFEST)

    def progress(self) -> BuildProgress | None:
        try:
            progress = BuildProgress(**json.loads((self.config.path / PROGRESS).read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):  # no build, or a record being replaced
            return None
        return progress if _process_alive(progress.pid) else None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


class PendingVectors:
    """Vectors made by a build and not yet in a committed generation, on disk as soon as they are made, so a
    build that is stopped (Ctrl-C, a crash, a reboot) resumes without embedding them again. They are kept
    for one model and vector space; another one's are dropped."""

    def __init__(self, path: Path, embedder: Embedder):
        self.path = path
        self._key = json.dumps([embedder.model_id, vector_space(embedder.backend), embedder.dim,
                                embedder.passage_prompt])
        self._dim = embedder.dim
        self.db = sqlite3.connect(path)
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT)")
        self.db.execute("CREATE TABLE IF NOT EXISTS vectors (text_hash TEXT PRIMARY KEY, vector BLOB)")
        stored = self.db.execute("SELECT key FROM meta").fetchone()
        if stored is None or stored[0] != self._key:
            self.db.execute("DELETE FROM vectors")
            self.db.execute("DELETE FROM meta")
            self.db.execute("INSERT INTO meta VALUES (?)", (self._key,))
        self.db.commit()
        self._vectors = {h: np.frombuffer(blob, dtype=np.float32) for h, blob in self.db.execute(
            "SELECT text_hash, vector FROM vectors")}

    def __len__(self) -> int:
        return len(self._vectors)

    def get(self, text_hash: str) -> np.ndarray | None:
        return self._vectors.get(text_hash)

    def put(self, vectors: dict[str, np.ndarray]) -> None:
        rows = [(h, np.asarray(v, dtype=np.float32).tobytes()) for h, v in vectors.items()]
        self.db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)", rows)
        self.db.commit()
        self._vectors.update({h: np.frombuffer(blob, dtype=np.float32) for h, blob in rows})

    def close(self, *, remove: bool = False) -> None:
        """`remove`: the vectors are in a committed generation now (an empty file is removed anyway)."""
        self.db.close()
        if remove or not self._vectors:
            self.path.unlink(missing_ok=True)


# ---------------------------------------------------------------- reading


def _expect(consistent: bool, what: str) -> None:
    """The parts of a generation must describe the same passages (a file from another build does not)."""
    if not consistent:
        raise ValueError(what)


def _article_from_row(row: sqlite3.Row) -> Article:
    return Article(
        article_id=row["article_id"], path=row["path"], title=row["title"],
        date=datetime.fromisoformat(row["date"]), url=row["url"],
        categories=tuple(json.loads(row["categories"])), tags=tuple(json.loads(row["tags"])),
        author=row["author"], excerpt=row["excerpt"], body=row["body"],
        headings=tuple(Heading(**h) for h in json.loads(row["headings"])), content_hash=row["content_hash"],
        image=row["image"] if "image" in row.keys() else "",  # generations written before images were kept
    )


def _chunk_from_row(row: sqlite3.Row) -> Chunk:
    return Chunk(row["article_id"], row["ordinal"], row["text"], row["char_start"], row["char_end"],
                 tuple(json.loads(row["heading_path"])))


class FolderIndex:
    """A loaded generation: FAISS and BM25 in memory, the passages in SQLite (read only), article facts in arrays."""

    def __init__(self, generation: Path, manifest: Manifest, *, searching: bool = True):
        """`searching`: load the BM25 postings too (a writer reading its predecessor needs none)."""
        import faiss

        self.path, self.manifest, self.generation = generation, manifest, generation.name
        texts = manifest.counts.rows
        with _reading(generation, DENSE):
            self.dense = faiss.read_index(str(generation / DENSE))
            _expect(self.dense.ntotal == texts, f"{self.dense.ntotal} vectors for {texts} passages")
        if searching:
            with _reading(generation, TERMS_DIR + "/"):
                self.bm25 = BM25(TermCounts.load(generation / TERMS_DIR), manifest.bm25.k1, manifest.bm25.b)
                _expect(self.bm25.rows == texts, f"{self.bm25.rows} BM25 rows for {texts} passages")
        with _reading(generation, STORE):
            # Shared across the service's threads; SQLite serialises access in its own lock.
            self.db = sqlite3.connect(f"file:{generation / STORE}?mode=ro", uri=True, check_same_thread=False)
            self.db.row_factory = sqlite3.Row
            try:
                if searching:  # a writer reading its predecessor needs the rows, not the filters' facts
                    self._load_article_facts()
                    _expect(len(self._n_articles) == texts, f"{len(self._n_articles)} stored texts for {texts} passages")
                    carried = len(self._n_articles) - len(self._retired)
                    _expect(carried == manifest.counts.distinct_texts,
                            f"{carried} carried texts for {manifest.counts.distinct_texts} passages")
            except BaseException:
                self.db.close()
                raise
        self._allowed_cache: dict[Filters, tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def open(cls, index_dir: Path, embedder: Embedder | None = None, *, searching: bool = True) -> "FolderIndex":
        generation = live_generation(index_dir)
        with _reading(generation, MANIFEST):
            manifest = Manifest.read(generation / MANIFEST)
        manifest.check(str(index_dir), embedder, searching=searching)
        return cls(generation, manifest, searching=searching)

    def _load_article_facts(self) -> None:
        """Article positions, dates, categories and tags in memory: filters and date weights need no SQL."""
        self.article_ids: list[str] = []
        position: dict[str, int] = {}
        meta = {}
        for row in self.db.execute("SELECT article_id, date, categories, tags FROM articles ORDER BY article_id"):
            position[row[0]] = len(self.article_ids)
            self.article_ids.append(row[0])
            meta[row[0]] = row
        rows = self.db.execute("SELECT text_id, article_id FROM chunks ORDER BY text_id, article_id").fetchall()
        self._chunk_text = np.array([r[0] for r in rows], dtype=np.int64)
        self._chunk_article = np.array([position[r[1]] for r in rows], dtype=np.int64)
        self._dates = [date.fromisoformat(meta[a][1][:10]) for a in self.article_ids]
        self._categories = [set(json.loads(meta[a][2])) for a in self.article_ids]
        self._tags = [set(json.loads(meta[a][3])) for a in self.article_ids]
        self._n_articles = [n for (n,) in self.db.execute("SELECT n_articles FROM texts ORDER BY text_id")]
        # rows of passages no article carries any more (an update removed them): never a search result
        self._retired = np.flatnonzero(np.array(self._n_articles, dtype=np.int64) == 0)
        # articles per text, in article order: the first allowed one is the one cited
        self._text_articles: dict[int, list[int]] = defaultdict(list)
        for text_id, article in zip(self._chunk_text.tolist(), self._chunk_article.tolist()):
            if not self._text_articles[text_id] or self._text_articles[text_id][-1] != article:
                self._text_articles[text_id].append(article)

    @property
    def size(self) -> int:
        return int(self.dense.ntotal)

    # -- filters

    def _allowed(self, filters: Filters) -> tuple[np.ndarray, np.ndarray] | None:
        """(allowed article mask, allowed text ids) for the filters; None when nothing is filtered."""
        if not filters:
            return None
        if filters not in self._allowed_cache:
            allowed = np.array([filters.admits(day, self._categories[i], self._tags[i])
                                for i, day in enumerate(self._dates)], dtype=bool)
            texts = np.unique(self._chunk_text[allowed[self._chunk_article]])
            if len(self._allowed_cache) >= 64:  # the page offers few distinct filters; keep the map small
                self._allowed_cache.clear()
            self._allowed_cache[filters] = (allowed, texts)
        return self._allowed_cache[filters]

    def matches_any(self, filters: Filters) -> bool:
        allowed = self._allowed(filters)
        return allowed is None or allowed[1].size > 0

    # -- search

    def dense_search(self, vector: np.ndarray, depth: int, filters: Filters) -> dict[int, float]:
        import faiss

        allowed = self._allowed(filters)
        params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed[1])) if allowed is not None else None
        retired = self._retired if allowed is None else ()  # the filter's texts are carried ones already
        scores, ids = self.dense.search(vector.reshape(1, -1), min(depth + len(retired), self.size), params=params)
        found = {int(i): float(s) for i, s in zip(ids[0], scores[0]) if i >= 0}
        for row in retired:
            found.pop(int(row), None)
        return dict(list(found.items())[:depth])

    def term_search(self, terms: Sequence[str], depth: int, filters: Filters) -> dict[int, float]:
        if not terms:
            return {}
        scores = self.bm25.scores(terms)
        allowed = self._allowed(filters)
        if allowed is not None:
            masked = np.full_like(scores, -np.inf)
            masked[allowed[1]] = scores[allowed[1]]
            scores = masked
        top = np.argpartition(-scores, min(depth, scores.size) - 1)[:depth]
        return {int(i): float(scores[i]) for i in top if scores[i] > 0}

    def term_weight(self, term: str) -> float:
        return self.bm25.idf(term)

    # -- lookups

    def passage(self, text_id: int, filters: Filters) -> Passage:
        allowed = self._allowed(filters)
        first, others = citing(self._text_articles[text_id], lambda a: allowed is None or allowed[0][a])
        article = self.article(self.article_ids[first])
        chunk = next(c for c in self.chunks_of_text(text_id) if c.article_id == article.article_id)
        return Passage(text_id, chunk, article, tuple(self.article_ids[a] for a in others),
                       self._n_articles[text_id])

    def passages(self, text_ids: Sequence[int], filters: Filters) -> list[Passage]:
        return [self.passage(t, filters) for t in text_ids]

    def recurrence(self, text_id: int) -> int:
        """How many articles carry this exact passage (boilerplate recurs in hundreds)."""
        return self._n_articles[text_id]

    def passage_dates(self, text_id: int) -> list[date]:
        return [self._dates[a] for a in self._text_articles[text_id]]

    def newest_date(self) -> date | None:
        return max(self._dates) if self._dates else None

    def facets(self) -> Facets:
        categories = sorted(set().union(*self._categories)) if self._categories else []
        dated = self.db.execute("SELECT article_id, date FROM articles").fetchall()
        dated.sort(key=lambda row: datetime.fromisoformat(row[1]), reverse=True)
        newest = [self.article(article_id) for article_id, _ in dated[:NEWEST_ARTICLES]]
        return Facets(categories, min(self._dates, default=None), max(self._dates, default=None),
                      [a for a in newest if a])

    def article(self, article_id: str) -> Article | None:
        row = self.db.execute("SELECT * FROM articles WHERE article_id = ?", (article_id,)).fetchone()
        return _article_from_row(row) if row else None

    def article_at(self, path: str) -> Article | None:
        """The article of a corpus file (its path relative to the corpus folder)."""
        row = self.db.execute("SELECT * FROM articles WHERE path = ?", (path,)).fetchone()
        return _article_from_row(row) if row else None

    def chunks_of_text(self, text_id: int) -> list[Chunk]:
        rows = self.db.execute(
            "SELECT c.*, t.text FROM chunks c JOIN texts t USING (text_id) WHERE text_id = ? ORDER BY article_id",
            (text_id,))
        return [_chunk_from_row(r) for r in rows]

    def chunks_of_article(self, article_id: str) -> list[Chunk]:
        rows = self.db.execute(
            "SELECT c.*, t.text FROM chunks c JOIN texts t USING (text_id) WHERE article_id = ? ORDER BY ordinal",
            (article_id,))
        return [_chunk_from_row(r) for r in rows]

    def vectors(self) -> np.ndarray:
        return self.dense.reconstruct_n(0, self.size) if self.size else np.zeros((0, self.dense.d), np.float32)

    def close(self) -> None:
        self.db.close()


# ---------------------------------------------------------------- writing


def library_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """The versions a manifest records: Python, ours, the model's and the analysis's libraries, and `extra`."""
    versions = {"python": platform.python_version()}
    for package in ("jrag", "torch", "sentence-transformers", "transformers", "faiss-cpu", "scipy", "fugashi",
                    "unidic-lite", *extra):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


LOAD_ALL_TERMS_FROM = 1000  # documents asked for at once: past this, the stored terms are read in one query


class AnalysedTerms:
    """The BM25 terms of each document (title + passage), analysed once: a generation stores them, so the next
    build analyses only new documents, and a build that commits twice (terms first) analyses them once. The
    tagger is the largest step of a build apart from the model (about 2 minutes for the shared corpus)."""

    def __init__(self, previous: "FolderIndex | None"):
        self._previous = previous
        self._known: dict[str, bytes] | None = None  # document hash -> compressed terms
        self._made: dict[str, bytes] = {}

    def _load(self) -> dict[str, bytes]:
        if self._known is None:
            self._known = {}
            if self._reusable():
                try:
                    self._known = dict(self._previous.db.execute("SELECT document_hash, terms FROM bm25_terms"))
                except sqlite3.OperationalError:  # a generation from before terms were stored
                    pass
        return self._known

    def _reusable(self) -> bool:
        return self._previous is not None and self._previous.manifest.bm25.tokenizer == BM25_ANALYSIS

    def _looked_up(self, key: str) -> bytes | None:
        """One document's stored terms: an update asks for few, where loading them all takes seconds."""
        if self._known is not None or not self._reusable():
            return self._load().get(key)
        try:
            row = self._previous.db.execute("SELECT terms FROM bm25_terms WHERE document_hash = ?", (key,)).fetchone()
        except sqlite3.OperationalError:  # a generation from before terms were stored
            return None
        return row[0] if row else None

    def _packed(self, document: str, many: bool) -> bytes:
        key = text_hash(document)
        packed = self._made.get(key) or (self._load().get(key) if many else self._looked_up(key))
        if packed is None:
            packed = self._made[key] = zlib.compress("\x1f".join(tokenize(document)).encode("utf-8"))
        return packed

    def of(self, documents: list[str]) -> list[list[str]]:
        """The unigram terms of each document."""
        unpacked, many = [], len(documents) > LOAD_ALL_TERMS_FROM
        for document in documents:
            joined = zlib.decompress(self._packed(document, many)).decode("utf-8")
            unpacked.append(joined.split("\x1f") if joined else [])
        return unpacked

    def rows(self, documents: list[str]) -> list[tuple[str, bytes]]:
        return [(text_hash(d), self._packed(d, len(documents) > LOAD_ALL_TERMS_FROM)) for d in documents]


def _marks(values) -> str:
    return ",".join("?" * len(values))


def _count_articles(db: sqlite3.Connection, rows: set[int]) -> None:
    """Set how many articles carry each of these texts (0: retired, no article carries it any more)."""
    rows = sorted(rows)
    for first in range(0, len(rows), 900):  # SQLite's bound on parameters
        part = rows[first:first + 900]
        counted = dict(db.execute(f"SELECT text_id, COUNT(DISTINCT article_id) FROM chunks "
                                  f"WHERE text_id IN ({_marks(part)}) GROUP BY text_id", part))
        db.executemany("UPDATE texts SET n_articles = ? WHERE text_id = ?", [(counted.get(r, 0), r) for r in part])


def _live_has_vectors(index_dir: Path) -> bool:
    try:
        return Manifest.read(live_generation(index_dir) / MANIFEST).has_vectors
    except (RagError, OSError, ValueError, KeyError, TypeError):  # none, or damaged: nothing worth serving
        return False


class FolderWriter:
    """Writes the next generation: the previous one's articles, with the puts and deletes applied."""

    def __init__(self, config: FolderConfig, embedder: Embedder, *, rebuild: bool, lock: BuildLock | None = None):
        """`lock`: the build lock the caller already holds (taken before the model loaded); else the writer's own."""
        self.config, self.embedder = config, embedder
        self._own_lock = BuildLock(config.path) if lock is None else None
        # a rebuild reuses them too: they are what the model would make again
        self._pending = PendingVectors(config.path / PENDING_VECTORS, embedder)
        self._committed_all_vectors = False
        self.previous: FolderIndex | None = None
        if not rebuild:
            try:
                self.previous = FolderIndex.open(config.path, embedder, searching=False)
            except IndexNotBuilt:
                pass
            except BaseException:
                self.close()
                raise
        self.files: dict[str, str] = dict(self.previous.manifest.files) if self.previous else {}
        self.terms_first = not (_live_has_vectors(config.path) if rebuild else bool(
            self.previous and self.previous.manifest.has_vectors))
        self._puts: dict[str, tuple[Article, list[Chunk]]] = {}  # by corpus path, in put order
        self._deleted: set[str] = set()
        self._previous_vectors: np.ndarray | None = None
        self._previous_rows: dict[str, int] = {}
        if self.previous:
            self._previous_rows = {h: row for row, h in self.previous.db.execute("SELECT text_id, text_hash FROM texts")}
        self._terms = AnalysedTerms(self.previous)

    def previous_chunks(self, article: Article, chunker: dict) -> list[Chunk] | None:
        """The body is compared too: a newer cleaner turns the same file into a different body."""
        previous = self.previous
        if not (previous and previous.manifest.chunker == chunker and self.files.get(article.path) == article.content_hash):
            return None
        row = previous.db.execute("SELECT body FROM articles WHERE article_id = ?", (article.article_id,)).fetchone()
        return previous.chunks_of_article(article.article_id) if row and row[0] == article.body else None

    def known_vector(self, hash_: str) -> np.ndarray | None:
        row = self._previous_rows.get(hash_)
        if row is not None:
            if self._previous_vectors is None:
                self._previous_vectors = self.previous.vectors()
            if self._previous_vectors[row].any():  # a terms-only generation stores zeros for missing vectors
                return self._previous_vectors[row]
        return self._pending.get(hash_)

    def put(self, article: Article, chunks: list[Chunk]) -> None:
        self._puts[article.path] = (article, chunks)
        self._deleted.discard(article.path)

    def delete(self, path: str) -> None:
        self._puts.pop(path, None)
        self._deleted.add(path)

    def put_vectors(self, vectors: dict[str, np.ndarray]) -> None:
        self._pending.put(vectors)

    def record_progress(self, progress: BuildProgress) -> None:
        record = self.config.path / f".{PROGRESS}.tmp"
        record.write_text(json.dumps(asdict(progress)), encoding="utf-8")
        os.replace(record, self.config.path / PROGRESS)

    def _contents(self) -> list[tuple[Article, list[Chunk]]]:
        """The previous generation's untouched articles, then the puts in their order."""
        untouched = []
        for path in self.files:  # only the articles left alone are read back (an update puts them all)
            if path not in self._puts and path not in self._deleted:
                article = self.previous.article_at(path)
                untouched.append((article, self.previous.chunks_of_article(article.article_id)))
        return untouched + list(self._puts.values())

    def commit(self, description: Description) -> Manifest:
        name = _new_generation_name(self.config.path)
        staging = self.config.path / f".{name}.tmp"
        try:
            staging.mkdir(parents=True)
            manifest = self._write(staging, description)
            generation = self.config.path / name
            staging.rename(generation)
        except BaseException as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(exc, (OSError, sqlite3.Error, RuntimeError)):  # RuntimeError: faiss's write errors
                why = os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else "a write failed"
                raise IndexWriteFailed(f"could not write the new index generation ({why}): the live index is "
                                       f"unchanged; free disk space and run `rag index` again") from exc
            raise
        self._swap_current(generation)
        self._committed_all_vectors = manifest.has_vectors
        return manifest

    def _write(self, staging: Path, description: Description) -> Manifest:
        """The next generation: the previous one with the changes applied where it can be (an update costs what
        changed), else written whole (a first build, another format or analysis, or many retired rows)."""
        previous = self.previous
        appendable = (previous is not None and previous.manifest.format_version == FORMAT_VERSION
                      and previous.manifest.bm25.tokenizer == BM25_ANALYSIS)
        if appendable:
            shutil.copyfile(previous.path / STORE, staging / STORE)
            db = sqlite3.connect(staging / STORE)
            rows, changed = self._apply_changes(db)
            retired = db.execute("SELECT COUNT(*) FROM texts WHERE n_articles = 0").fetchone()[0]
            if retired <= MAX_RETIRED_SHARE * rows:
                terms = TermCounts.load(previous.path / TERMS_DIR).replaced(self._documents(db, changed), rows)
                if self._previous_vectors is None:
                    self._previous_vectors = previous.vectors()
                return self._finish(staging, db, terms, self._previous_vectors, description)
            db.close()
            (staging / STORE).unlink()
        db = sqlite3.connect(staging / STORE)
        self._write_all(db)
        rows = db.execute("SELECT COUNT(*) FROM texts").fetchone()[0]
        return self._finish(staging, db, TermCounts.of(list(self._documents(db, range(rows)).values())),
                            np.zeros((0, self.embedder.dim), np.float32), description)

    def _write_all(self, db: sqlite3.Connection) -> None:
        """Every article into a new database: the previous generation's untouched ones, then the puts."""
        contents = self._contents()
        db.executescript(SCHEMA)
        _count_articles(db, self._insert(db, contents, {}, chunk_ids=0))
        db.commit()

    def _insert(self, db: sqlite3.Connection, contents: list[tuple[Article, list[Chunk]]], rows: dict[str, int],
                chunk_ids: int) -> set[int]:
        """Insert the articles and their chunks; a text `rows` lacks gets the next row. Returns the rows used."""
        db.executemany("INSERT INTO articles VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", [
            (a.article_id, a.path, a.title, a.date.isoformat(), a.url,
             json.dumps(a.categories, ensure_ascii=False), json.dumps(a.tags, ensure_ascii=False), a.author,
             a.excerpt, a.body, json.dumps([asdict(h) for h in a.headings], ensure_ascii=False), a.content_hash, a.image)
            for a, _ in contents])
        next_row = db.execute("SELECT COUNT(*) FROM texts").fetchone()[0]
        new_texts, chunk_rows, used = [], [], set()
        for _, chunks in contents:
            for chunk in chunks:
                hash_ = text_hash(chunk.text)
                row = rows.get(hash_)
                if row is None:
                    row = rows[hash_] = next_row
                    next_row += 1
                    new_texts.append((row, hash_, chunk.text, 0))
                used.add(row)
                chunk_rows.append((chunk_ids, chunk.article_id, chunk.ordinal, row, chunk.char_start, chunk.char_end,
                                   json.dumps(chunk.heading_path, ensure_ascii=False)))
                chunk_ids += 1
        db.executemany("INSERT INTO texts VALUES (?,?,?,?)", new_texts)
        db.executemany("INSERT INTO chunks VALUES (?,?,?,?,?,?,?)", chunk_rows)
        return used

    def _apply_changes(self, db: sqlite3.Connection) -> tuple[int, set[int]]:
        """The puts and deletes applied to a copy of the previous database; returns its rows and the rows changed."""
        puts = list(self._puts.values())
        db.execute("CREATE TEMP TABLE gone (article_id TEXT PRIMARY KEY)")  # deleted and replaced articles
        db.executemany("INSERT OR IGNORE INTO gone SELECT article_id FROM articles WHERE path = ?",
                       [(path,) for path in {*self._deleted, *self._puts}])
        db.executemany("INSERT OR IGNORE INTO gone VALUES (?)", [(a.article_id,) for a, _ in puts])
        changed = {r[0] for r in db.execute("SELECT text_id FROM chunks WHERE article_id IN (SELECT * FROM gone)")}
        db.execute("DELETE FROM chunks WHERE article_id IN (SELECT * FROM gone)")
        db.execute("DELETE FROM articles WHERE article_id IN (SELECT * FROM gone)")
        db.execute("DROP TABLE gone")
        rows = dict(self._previous_rows)
        next_chunk = db.execute("SELECT COALESCE(MAX(chunk_id), -1) + 1 FROM chunks").fetchone()[0]
        changed |= self._insert(db, puts, rows, next_chunk)
        _count_articles(db, changed)
        db.commit()
        return db.execute("SELECT COUNT(*) FROM texts").fetchone()[0], changed

    def _documents(self, db: sqlite3.Connection, rows) -> dict[int, list[str]]:
        """The BM25 terms of these rows' documents (the title of the passage's first article, by article id, and
        the passage); a retired row's are none. Terms analysed before are reused; new ones are stored."""
        rows = sorted(rows)
        documents: dict[int, str] = {}
        for first in range(0, len(rows), 900):  # SQLite's bound on parameters
            part = rows[first:first + 900]
            for row, text, title in db.execute(
                    f"SELECT t.text_id, t.text, (SELECT a.title FROM chunks c JOIN articles a USING (article_id) "
                    f"WHERE c.text_id = t.text_id ORDER BY c.article_id LIMIT 1) FROM texts t "
                    f"WHERE t.text_id IN ({_marks(part)})", part):
                if title is not None:
                    documents[row] = title + "\n" + text
        analysed = dict(zip(documents, self._terms.of(list(documents.values()))))
        db.executemany("INSERT OR IGNORE INTO bm25_terms VALUES (?, ?)", self._terms.rows(list(documents.values())))
        db.commit()
        return {row: with_bigrams(analysed[row]) if row in analysed else [] for row in rows}

    def _finish(self, staging: Path, db: sqlite3.Connection, terms: TermCounts, previous_vectors: np.ndarray,
                description: Description) -> Manifest:
        """Write the dense and term parts and the manifest beside the database."""
        import faiss

        hashes = [h for (h,) in db.execute("SELECT text_hash FROM texts ORDER BY text_id")]
        carried = {row for (row,) in db.execute("SELECT text_id FROM texts WHERE n_articles > 0")}
        vectors = np.zeros((len(hashes), self.embedder.dim), dtype=np.float32)  # zeros: no vector yet
        vectors[: len(previous_vectors)] = previous_vectors[: len(hashes)]
        missing = 0
        for row in np.flatnonzero(~vectors.any(axis=1)).tolist():
            known = self.known_vector(hashes[row])
            if known is not None:
                vectors[row] = known
            elif row in carried:
                missing += 1
        dense = faiss.IndexScalarQuantizer(self.embedder.dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        dense.add(vectors)
        faiss.write_index(dense, str(staging / DENSE))
        terms.save(staging / TERMS_DIR)

        articles = db.execute("SELECT COUNT(*) FROM articles").fetchone()[0]
        chunks = db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        db.close()
        files = {path: hash_ for path, hash_ in self.files.items() if path not in self._deleted and path not in self._puts}
        files.update({path: article.content_hash for path, (article, _) in self._puts.items()})
        d = description
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            model=ModelInfo.of(self.embedder), chunker=d.chunker,
            dense=DenseInfo("faiss", "exhaustive inner product", DENSE_STORAGE, missing),
            bm25=TermsInfo("jrag term counts", BM25_DOCUMENTS, BM25_ANALYSIS, sorted(DROPPED_POS), self.config.bm25_k1,
                           self.config.bm25_b),
            source=d.source,
            counts=Counts(articles, chunks, len(carried), chunks - len(carried), d.malformed_files, len(hashes)),
            build=BuildInfo(round(time.perf_counter() - d.started, 2), round(d.embed_seconds, 2), d.embedded, d.reused),
            files=files, versions=library_versions())
        manifest.write(staging / MANIFEST)
        return manifest

    def _swap_current(self, generation: Path) -> None:
        """Point CURRENT at the new generation atomically, then drop every generation but it and its predecessor.

        The predecessor is the one CURRENT named before the swap, never the one whose name sorts next: names
        come from the clock, and a clock that went back (or an index copied from a machine whose clock ran
        ahead) would otherwise get the new generation deleted right after CURRENT points at it.
        """
        index_dir = self.config.path
        try:
            predecessor = _pointer(index_dir)
        except (OSError, UnicodeDecodeError):  # a damaged CURRENT (a --rebuild repairs it) names nothing to keep
            predecessor = None
        pointer_tmp = index_dir / f".{CURRENT}.tmp"
        pointer_tmp.write_text(generation.name + "\n", encoding="utf-8")
        os.replace(pointer_tmp, index_dir / CURRENT)
        # The predecessor stays one build longer: a running service may still be reading it.
        kept = {generation.name, predecessor}
        for old in index_dir.glob("gen-*"):
            if old.is_dir() and old.name not in kept:
                shutil.rmtree(old, ignore_errors=True)
        for stale in index_dir.glob(".gen-*.tmp"):  # left by a crashed build
            shutil.rmtree(stale, ignore_errors=True)

    def close(self) -> None:
        if self.previous:
            self.previous.close()
        # kept until a generation holds every vector: an interrupted build resumes from them
        self._pending.close(remove=self._committed_all_vectors)
        (self.config.path / PROGRESS).unlink(missing_ok=True)
        if self._own_lock:
            self._own_lock.release()
