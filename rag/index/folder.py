"""The folder store: an index as generations in a folder, FAISS (dense) + bm25s (terms) + SQLite (passages).

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
from rag.japanese import BM25_ANALYSIS, DROPPED_POS, tokenize, with_bigrams
from rag.types import Article, Chunk, Facets, Filters, Heading

log = logging.getLogger(__name__)

CURRENT = "CURRENT"
MANIFEST = "manifest.json"
STORE = "chunks.sqlite"
DENSE = "dense.faiss"
BM25_DIR = "bm25"
PENDING_VECTORS = "vectors.pending.sqlite"
PROGRESS = "BUILDING.json"
# Vectors are stored as float16 (exhaustive inner-product search): half the memory of float32 and 2.6-3.5x
# faster for one question, since the search only streams the vectors; 99.86% of the float32 top 10
# (bench/faiss_compression.py on the full corpus: 144 -> 72 MB, 8-10 -> 3 ms). An update re-adds the
# stored vectors, and float16 round-trips exactly, so updates never drift.
DENSE_STORAGE = "float16"
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
    except Exception as exc:  # noqa: BLE001  (faiss, bm25s, numpy, sqlite and json each raise their own)
        log.info("reading %s/%s failed: %r", generation, part, exc)
        raise IndexDamaged(f"index generation {generation.name}: {part} cannot be read (truncated or corrupt): "
                           f"{REBUILD}") from exc


@dataclass(frozen=True)
class FolderConfig:
    path: Path
    bm25_k1: float  # BM25 parameters are applied when the terms are indexed
    bm25_b: float


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
        self.db.close()
        if remove:
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

    def __init__(self, generation: Path, manifest: Manifest):
        import bm25s
        import faiss

        self.path, self.manifest, self.generation = generation, manifest, generation.name
        texts = manifest.counts.distinct_texts
        with _reading(generation, DENSE):
            self.dense = faiss.read_index(str(generation / DENSE))
            _expect(self.dense.ntotal == texts, f"{self.dense.ntotal} vectors for {texts} passages")
        with _reading(generation, BM25_DIR + "/"):
            self.bm25 = bm25s.BM25.load(str(generation / BM25_DIR), show_progress=False)
            self._doc_freq = np.diff(self.bm25.scores["indptr"])  # bm25s stores one column per vocabulary term
            self._num_docs = int(self.bm25.scores["num_docs"])
            _expect(self._num_docs == texts, f"{self._num_docs} BM25 documents for {texts} passages")
        with _reading(generation, STORE):
            # Shared across the service's threads; SQLite serialises access in its own lock.
            self.db = sqlite3.connect(f"file:{generation / STORE}?mode=ro", uri=True, check_same_thread=False)
            self.db.row_factory = sqlite3.Row
            try:
                self._load_article_facts()
                _expect(len(self._n_articles) == texts, f"{len(self._n_articles)} stored texts for {texts} passages")
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
        return cls(generation, manifest)

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
        scores, ids = self.dense.search(vector.reshape(1, -1), min(depth, self.size), params=params)
        return {int(i): float(s) for i, s in zip(ids[0], scores[0]) if i >= 0}

    def term_search(self, terms: Sequence[str], depth: int, filters: Filters) -> dict[int, float]:
        if not terms:
            return {}
        scores = self.bm25.get_scores(list(terms))
        allowed = self._allowed(filters)
        if allowed is not None:
            masked = np.full_like(scores, -np.inf)
            masked[allowed[1]] = scores[allowed[1]]
            scores = masked
        top = np.argpartition(-scores, min(depth, scores.size) - 1)[:depth]
        return {int(i): float(scores[i]) for i in top if scores[i] > 0}

    def term_weight(self, term: str) -> float:
        column = self.bm25.vocab_dict.get(term)
        df = int(self._doc_freq[column]) if column is not None else 0
        return math.log(1 + (self._num_docs - df + 0.5) / (df + 0.5))

    # -- lookups

    def passage(self, text_id: int, filters: Filters) -> Passage:
        allowed = self._allowed(filters)
        first, others = citing(self._text_articles[text_id], lambda a: allowed is None or allowed[0][a])
        article = self.article(self.article_ids[first])
        chunk = next(c for c in self.chunks_of_text(text_id) if c.article_id == article.article_id)
        return Passage(text_id, chunk, article, tuple(self.article_ids[a] for a in others),
                       self._n_articles[text_id])

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
    for package in ("jrag", "torch", "sentence-transformers", "transformers", "faiss-cpu", "bm25s", "fugashi",
                    "unidic-lite", *extra):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


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
            previous = self._previous
            if previous is not None and previous.manifest.bm25.tokenizer == BM25_ANALYSIS:
                try:
                    self._known = dict(previous.db.execute("SELECT document_hash, terms FROM bm25_terms"))
                except sqlite3.OperationalError:  # a generation from before terms were stored
                    pass
        return self._known

    def _packed(self, document: str) -> bytes:
        key = text_hash(document)
        packed = self._made.get(key) or self._load().get(key)
        if packed is None:
            packed = self._made[key] = zlib.compress("\x1f".join(tokenize(document)).encode("utf-8"))
        return packed

    def of(self, documents: list[str]) -> list[list[str]]:
        """The unigram terms of each document."""
        unpacked = []
        for document in documents:
            joined = zlib.decompress(self._packed(document)).decode("utf-8")
            unpacked.append(joined.split("\x1f") if joined else [])
        return unpacked

    def rows(self, documents: list[str]) -> list[tuple[str, bytes]]:
        return [(text_hash(d), self._packed(d)) for d in documents]


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
        contents = self._contents()
        name = _new_generation_name(self.config.path)
        staging = self.config.path / f".{name}.tmp"
        try:
            staging.mkdir(parents=True)
            manifest = self._write(staging, contents, description)
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

    def _write(self, staging: Path, contents: list[tuple[Article, list[Chunk]]], description: Description) -> Manifest:
        import bm25s
        import faiss

        articles = [article for article, _ in contents]
        chunks = [chunk for _, article_chunks in contents for chunk in article_chunks]
        texts: dict[str, str] = {}  # hash -> text, in first-seen order: the text ids
        for chunk in chunks:
            texts.setdefault(text_hash(chunk.text), chunk.text)
        hashes = list(texts)
        row_of_hash = {h: i for i, h in enumerate(hashes)}
        articles_per_text: dict[int, set[str]] = {}
        first_title: dict[int, str] = {}
        title_of = {a.article_id: a.title for a in articles}
        for chunk in chunks:
            row = row_of_hash[text_hash(chunk.text)]
            articles_per_text.setdefault(row, set()).add(chunk.article_id)
            first_title.setdefault(row, title_of[chunk.article_id])

        db = sqlite3.connect(staging / STORE)
        db.executescript(SCHEMA)
        db.executemany("INSERT INTO articles VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", [
            (a.article_id, a.path, a.title, a.date.isoformat(), a.url,
             json.dumps(a.categories, ensure_ascii=False), json.dumps(a.tags, ensure_ascii=False), a.author,
             a.excerpt, a.body, json.dumps([asdict(h) for h in a.headings], ensure_ascii=False), a.content_hash, a.image)
            for a in articles])
        db.executemany("INSERT INTO texts VALUES (?,?,?,?)", [
            (row, h, texts[h], len(articles_per_text[row])) for row, h in enumerate(hashes)])
        db.executemany("INSERT INTO chunks VALUES (?,?,?,?,?,?,?)", [
            (i, c.article_id, c.ordinal, row_of_hash[text_hash(c.text)], c.char_start, c.char_end,
             json.dumps(c.heading_path, ensure_ascii=False)) for i, c in enumerate(chunks)])
        documents = [first_title[row] + "\n" + texts[h] for row, h in enumerate(hashes)]  # what BM25 indexes
        db.executemany("INSERT OR IGNORE INTO bm25_terms VALUES (?, ?)", self._terms.rows(documents))
        db.commit()
        db.close()

        vectors = np.zeros((len(hashes), self.embedder.dim), dtype=np.float32)  # zeros: no vector yet
        missing = 0
        for row, h in enumerate(hashes):
            known = self.known_vector(h)
            if known is None:
                missing += 1
            else:
                vectors[row] = known
        dense = faiss.IndexScalarQuantizer(self.embedder.dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        dense.add(vectors)
        faiss.write_index(dense, str(staging / DENSE))

        bm25 = bm25s.BM25(k1=self.config.bm25_k1, b=self.config.bm25_b)
        bm25.index([with_bigrams(terms) for terms in self._terms.of(documents)], show_progress=False)
        bm25.save(str(staging / BM25_DIR), show_progress=False)

        d = description
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            model=ModelInfo.of(self.embedder), chunker=d.chunker,
            dense=DenseInfo("faiss", "exhaustive inner product", DENSE_STORAGE, missing),
            bm25=TermsInfo("bm25s", BM25_DOCUMENTS, BM25_ANALYSIS, sorted(DROPPED_POS), bm25.k1, bm25.b),
            source=d.source,
            counts=Counts(len(articles), len(chunks), len(hashes), len(chunks) - len(hashes), d.malformed_files),
            build=BuildInfo(round(time.perf_counter() - d.started, 2), round(d.embed_seconds, 2), d.embedded, d.reused),
            files={a.path: a.content_hash for a in articles}, versions=library_versions())
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
