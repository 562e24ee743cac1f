"""Build, update and open an index: FAISS (dense), BM25 (fugashi tokens) and a SQLite chunk store.

Layout of an index folder:
    CURRENT              name of the live generation (replaced atomically)
    gen-<time>/          manifest.json, chunks.sqlite, dense.faiss, bm25/
A build writes a new generation beside the live one and then swaps CURRENT, so a crash never leaves a
half index and a reader never sees one. Distinct chunk texts are stored, embedded and indexed once
("texts"); "chunks" map each article's passages to them. An update reuses the vectors of every text
it already has, so only new or changed passages reach the model.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np

from rag.chunking import Chunker, ChunkerConfig
from rag.corpus import CorpusLoad
from rag.embeddings import Embedder, vector_space
from rag.errors import IndexMismatch, IndexNotBuilt, MalformedArticle, RagError
from rag.japanese import BM25_ANALYSIS, DROPPED_POS, bm25_document_terms
from rag.types import Article, Chunk, Heading

FORMAT_VERSION = 1
# What BM25 indexes per distinct passage. The article title names the entity that questions ask about
# and a paragraph often leaves implicit (measured: allforces dev hit@1 0.837 -> 0.907 for BM25 alone).
BM25_DOCUMENTS = "title of the first article holding the passage + passage"
CURRENT = "CURRENT"
MANIFEST = "manifest.json"
STORE = "chunks.sqlite"
DENSE = "dense.faiss"
# Vectors are stored as float16 (exhaustive inner-product search): half the memory of float32 and 2.6-3.5x
# faster for one question, since the search only streams the vectors; 99.86% of the float32 top 10
# (bench/faiss_compression.py on the full corpus: 144 -> 72 MB, 8-10 -> 3 ms). An update re-adds the
# stored vectors, and float16 round-trips exactly, so updates never drift.
DENSE_STORAGE = "float16"
BM25_DIR = "bm25"

SCHEMA = """
CREATE TABLE articles (
    article_id TEXT PRIMARY KEY, path TEXT, title TEXT, date TEXT, url TEXT, categories TEXT, tags TEXT,
    author TEXT, excerpt TEXT, body TEXT, headings TEXT, content_hash TEXT);
CREATE TABLE texts (text_id INTEGER PRIMARY KEY, text_hash TEXT UNIQUE, text TEXT, n_articles INTEGER);
CREATE TABLE chunks (
    chunk_id INTEGER PRIMARY KEY, article_id TEXT, ordinal INTEGER, text_id INTEGER,
    char_start INTEGER, char_end INTEGER, heading_path TEXT);
CREATE INDEX chunks_by_text ON chunks(text_id);
CREATE INDEX chunks_by_article ON chunks(article_id, ordinal);
"""


def text_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


@dataclass
class BuildReport:
    articles: int = 0
    chunks: int = 0
    distinct_texts: int = 0
    duplicate_chunks: int = 0  # chunks whose text another chunk already has: stored once, embedded once
    embedded: int = 0  # texts sent to the model in this build
    reused: int = 0  # texts whose vectors came from the previous build
    files_added: list[str] = field(default_factory=list)
    files_changed: list[str] = field(default_factory=list)
    files_deleted: list[str] = field(default_factory=list)
    malformed: list[MalformedArticle] = field(default_factory=list)
    seconds: float = 0.0
    embed_seconds: float = 0.0
    index_dir: str = ""

    @property
    def chunks_per_second(self) -> float:
        return self.chunks / self.seconds if self.seconds else 0.0

    @property
    def embedded_per_second(self) -> float:
        return self.embedded / self.embed_seconds if self.embed_seconds else 0.0


# ---------------------------------------------------------------- reading an index


def live_generation(index_dir: Path) -> Path:
    """The folder of the live generation, or IndexNotBuilt with the command that builds one."""
    pointer = index_dir / CURRENT
    if pointer.is_file():
        generation = index_dir / pointer.read_text(encoding="utf-8").strip()
        if (generation / MANIFEST).is_file():
            return generation
    if (index_dir / MANIFEST).is_file():  # a generation folder given directly
        return index_dir
    raise IndexNotBuilt(f"no index at {index_dir}: build one with `rag index --index {index_dir}`")


def read_manifest(index_dir: Path) -> dict:
    return json.loads((live_generation(index_dir) / MANIFEST).read_text(encoding="utf-8"))


def check_model(manifest: dict, embedder: Embedder, index_dir: Path) -> None:
    built = manifest["model"]
    wanted = {"id": embedder.model_id, "dim": embedder.dim,
              "query_prompt": embedder.query_prompt, "passage_prompt": embedder.passage_prompt}
    differs = [key for key, value in wanted.items() if built.get(key) != value]
    if differs:
        raise IndexMismatch(
            f"index {index_dir} was built with model {built['id']} ({built['dim']} dims, prompts "
            f"{built['query_prompt']!r}/{built['passage_prompt']!r}) but the configured model is "
            f"{embedder.model_id} ({embedder.dim} dims, prompts {embedder.query_prompt!r}/"
            f"{embedder.passage_prompt!r}): rebuild with `rag index --rebuild` or configure the index's model"
        )
    built_backend = built.get("backend", "torch")
    if vector_space(built_backend) != vector_space(embedder.backend):
        raise IndexMismatch(
            f"index {index_dir} was built with embedding backend {built_backend}, whose vectors do not match "
            f"those of the configured backend {embedder.backend}: set RAG_EMBEDDING_BACKEND={built_backend} "
            f"or rebuild with `rag index --rebuild`"
        )


def _article_from_row(row: sqlite3.Row) -> Article:
    return Article(
        article_id=row["article_id"], path=row["path"], title=row["title"],
        date=datetime.fromisoformat(row["date"]), url=row["url"],
        categories=tuple(json.loads(row["categories"])), tags=tuple(json.loads(row["tags"])),
        author=row["author"], excerpt=row["excerpt"], body=row["body"],
        headings=tuple(Heading(**h) for h in json.loads(row["headings"])), content_hash=row["content_hash"],
    )


class Index:
    """A loaded generation: FAISS and BM25 in memory, the chunk store in SQLite (read only)."""

    def __init__(self, generation: Path):
        import bm25s
        import faiss

        self.path = generation
        self.manifest = json.loads((generation / MANIFEST).read_text(encoding="utf-8"))
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise IndexMismatch(f"index {generation} has format {self.manifest.get('format_version')}, "
                                f"this version reads {FORMAT_VERSION}: rebuild with `rag index --rebuild`")
        self.dense = faiss.read_index(str(generation / DENSE))
        self.bm25 = bm25s.BM25.load(str(generation / BM25_DIR), show_progress=False)
        # Shared across the service's threads; SQLite serialises access in its own lock.
        self.db = sqlite3.connect(f"file:{generation / STORE}?mode=ro", uri=True, check_same_thread=False)
        self.db.row_factory = sqlite3.Row

    @classmethod
    def open(cls, index_dir: Path, embedder: Embedder | None = None) -> "Index":
        index = cls(live_generation(index_dir))
        if embedder is not None:
            check_model(index.manifest, embedder, index_dir)
        return index

    @property
    def size(self) -> int:
        return int(self.dense.ntotal)

    def article(self, article_id: str) -> Article | None:
        row = self.db.execute("SELECT * FROM articles WHERE article_id = ?", (article_id,)).fetchone()
        return _article_from_row(row) if row else None

    def articles(self) -> Iterator[Article]:
        for row in self.db.execute("SELECT * FROM articles ORDER BY article_id"):
            yield _article_from_row(row)

    def chunks_of_text(self, text_id: int) -> list[Chunk]:
        rows = self.db.execute(
            "SELECT c.*, t.text FROM chunks c JOIN texts t USING (text_id) WHERE text_id = ? ORDER BY article_id",
            (text_id,),
        )
        return [_chunk_from_row(r) for r in rows]

    def chunks_of_article(self, article_id: str) -> list[Chunk]:
        rows = self.db.execute(
            "SELECT c.*, t.text FROM chunks c JOIN texts t USING (text_id) WHERE article_id = ? ORDER BY ordinal",
            (article_id,),
        )
        return [_chunk_from_row(r) for r in rows]

    def vectors(self) -> np.ndarray:
        return self.dense.reconstruct_n(0, self.size) if self.size else np.zeros((0, self.dense.d), np.float32)

    def close(self) -> None:
        self.db.close()


def _chunk_from_row(row: sqlite3.Row) -> Chunk:
    return Chunk(row["article_id"], row["ordinal"], row["text"], row["char_start"], row["char_end"],
                 tuple(json.loads(row["heading_path"])))


# ---------------------------------------------------------------- building an index


@contextmanager
def _build_lock(index_dir: Path):
    index_dir.mkdir(parents=True, exist_ok=True)
    with open(index_dir / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RagError(f"another `rag index` is already building {index_dir}") from None
        yield


def _library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("jrag", "torch", "sentence-transformers", "transformers", "faiss-cpu", "bm25s", "fugashi", "unidic-lite"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


class _Previous:
    """What the live generation can lend an update: chunks of unchanged files and known vectors."""

    def __init__(self, index: Index | None, chunker_config: dict):
        self.index = index
        self.files: dict[str, str] = index.manifest["files"] if index else {}
        self.same_chunker = bool(index) and index.manifest["chunker"] == chunker_config
        self._vectors: np.ndarray | None = None
        self._row_of_hash: dict[str, int] = {}
        if index:
            self._row_of_hash = {h: i for i, h in index.db.execute("SELECT text_id, text_hash FROM texts")}

    def chunks(self, article: Article) -> list[Chunk] | None:
        """The previous chunks when the file, its cleaned body and the chunker settings are unchanged.

        The body is compared too: a newer cleaner turns the same file into a different body.
        """
        if not (self.same_chunker and self.files.get(article.path) == article.content_hash):
            return None
        row = self.index.db.execute("SELECT body FROM articles WHERE article_id = ?", (article.article_id,)).fetchone()
        return self.index.chunks_of_article(article.article_id) if row and row[0] == article.body else None

    def vector(self, hash_: str) -> np.ndarray | None:
        row = self._row_of_hash.get(hash_)
        if row is None:
            return None
        if self._vectors is None:
            self._vectors = self.index.vectors()
        return self._vectors[row]


def build_index(
    loaded: CorpusLoad,
    index_dir: Path,
    embedder: Embedder,
    chunker_config: ChunkerConfig,
    *,
    source: dict[str, str],
    bm25_k1: float = 0.9,
    bm25_b: float = 0.4,
    rebuild: bool = False,
    progress: Callable[[int], None] | None = None,
    on_embed_start: Callable[[int], None] | None = None,
) -> BuildReport:
    """Index the loaded articles into `index_dir`, reusing the live generation's work unless `rebuild`.

    `source` describes where the articles came from (corpus folder, site URL); the manifest keeps it.
    """
    started = time.perf_counter()
    report = BuildReport(index_dir=str(index_dir))
    report.malformed = loaded.malformed
    with _build_lock(index_dir):
        previous_index = None
        if not rebuild:
            try:
                previous_index = Index.open(index_dir, embedder)
            except IndexNotBuilt:
                pass
        chunker_settings = asdict(chunker_config)
        previous = _Previous(previous_index, chunker_settings)
        try:
            files = {a.path: a.content_hash for a in loaded.articles}
            report.files_added = sorted(set(files) - set(previous.files)) if previous_index else []
            report.files_changed = sorted(p for p in files if p in previous.files and previous.files[p] != files[p])
            report.files_deleted = sorted(set(previous.files) - set(files))

            chunker = Chunker(chunker_config, embedder.count_tokens)
            chunks = [c for a in loaded.articles for c in (previous.chunks(a) or chunker.chunk(a))]
            texts: dict[str, str] = {}  # hash -> text, in first-seen order: the text ids
            for chunk in chunks:
                texts.setdefault(text_hash(chunk.text), chunk.text)
            hashes = list(texts)
            vectors = np.zeros((len(hashes), embedder.dim), dtype=np.float32)
            missing = []
            for row, h in enumerate(hashes):
                known = previous.vector(h)
                if known is None:
                    missing.append(row)
                else:
                    vectors[row] = known
            if on_embed_start:
                on_embed_start(len(missing))
            embed_started = time.perf_counter()
            if missing:
                vectors[missing] = embedder.encode_passages([texts[hashes[r]] for r in missing], progress=progress)
            report.embed_seconds = time.perf_counter() - embed_started

            report.articles, report.chunks, report.distinct_texts = len(loaded.articles), len(chunks), len(hashes)
            report.duplicate_chunks = len(chunks) - len(hashes)
            report.embedded, report.reused = len(missing), len(hashes) - len(missing)
            generation = _write_generation(
                index_dir, loaded.articles, chunks, hashes, texts, vectors, embedder, chunker_settings,
                files, source, (bm25_k1, bm25_b), report, started,
            )
        finally:
            if previous_index:
                previous_index.close()
        _swap_current(index_dir, generation)
    return report


def _write_generation(index_dir, articles, chunks, hashes, texts, vectors, embedder, chunker_settings,
                      files, source, bm25_params, report, started) -> Path:
    import bm25s
    import faiss

    name = "gen-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    staging = index_dir / f".{name}.tmp"
    staging.mkdir(parents=True)
    try:
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
        db.executemany("INSERT INTO articles VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", [
            (a.article_id, a.path, a.title, a.date.isoformat(), a.url,
             json.dumps(a.categories, ensure_ascii=False), json.dumps(a.tags, ensure_ascii=False), a.author,
             a.excerpt, a.body, json.dumps([asdict(h) for h in a.headings], ensure_ascii=False), a.content_hash)
            for a in articles])
        db.executemany("INSERT INTO texts VALUES (?,?,?,?)", [
            (row, h, texts[h], len(articles_per_text[row])) for row, h in enumerate(hashes)])
        db.executemany("INSERT INTO chunks VALUES (?,?,?,?,?,?,?)", [
            (i, c.article_id, c.ordinal, row_of_hash[text_hash(c.text)], c.char_start, c.char_end,
             json.dumps(c.heading_path, ensure_ascii=False)) for i, c in enumerate(chunks)])
        db.commit()
        db.close()

        dense = faiss.IndexScalarQuantizer(embedder.dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        dense.add(vectors)
        faiss.write_index(dense, str(staging / DENSE))

        bm25 = bm25s.BM25(k1=bm25_params[0], b=bm25_params[1])
        bm25.index([bm25_document_terms(first_title[row] + "\n" + texts[h]) for row, h in enumerate(hashes)],
                   show_progress=False)
        bm25.save(str(staging / BM25_DIR), show_progress=False)

        report.seconds = time.perf_counter() - started
        manifest = {
            "format_version": FORMAT_VERSION,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model": {"id": embedder.model_id, "backend": embedder.backend, "dim": embedder.dim,
                      "query_prompt": embedder.query_prompt, "passage_prompt": embedder.passage_prompt},
            "chunker": chunker_settings,
            "dense": {"library": "faiss", "search": "exhaustive inner product", "storage": DENSE_STORAGE},
            "bm25": {"library": "bm25s", "documents": BM25_DOCUMENTS,
                     "tokenizer": BM25_ANALYSIS,
                     "dropped_pos": sorted(DROPPED_POS), "k1": bm25.k1, "b": bm25.b},
            "source": source,
            "counts": {"articles": report.articles, "chunks": report.chunks, "distinct_texts": report.distinct_texts,
                       "duplicate_chunks": report.duplicate_chunks, "malformed_files": len(report.malformed)},
            "build": {"seconds": round(report.seconds, 2), "embed_seconds": round(report.embed_seconds, 2),
                      "embedded": report.embedded, "reused": report.reused},
            "files": files,
            "versions": _library_versions(),
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8")
        generation = index_dir / name
        staging.rename(generation)
        return generation
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _swap_current(index_dir: Path, generation: Path) -> None:
    """Point CURRENT at the new generation atomically, then drop all but it and its predecessor."""
    pointer_tmp = index_dir / f".{CURRENT}.tmp"
    pointer_tmp.write_text(generation.name + "\n", encoding="utf-8")
    os.replace(pointer_tmp, index_dir / CURRENT)
    # The predecessor stays one build longer: a running service may still be reading it.
    generations = sorted(p for p in index_dir.glob("gen-*") if p.is_dir())
    for old in generations[:-2]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in index_dir.glob(".gen-*.tmp"):  # left by a crashed build
        shutil.rmtree(stale, ignore_errors=True)
