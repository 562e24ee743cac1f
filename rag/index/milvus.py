"""The Milvus store: the index in Milvus collections, for any number of stateless `rag serve` replicas.

The same `pymilvus.MilvusClient(uri, token)` code reads and writes a milvus-lite file, a `milvus-lite server`
gRPC endpoint, Milvus Standalone or Distributed, and Zilliz Cloud. A generation is three collections:

    <prefix>_<gen>_texts     one row per distinct passage text: its vector (FLAT, inner product), its BM25
                             term weights (sparse, inner product), the articles holding it (`owners`) and
                             the union of their categories, tags and dates (what filters are pushed onto)
    <prefix>_<gen>_articles  one row per article: its facts, body and chunks
    <prefix>_<gen>_terms     one row per term dimension: how many passages have it (the IDF)

The alias `<prefix>` names the live texts collection; the texts collection's properties hold the manifest,
the facets and a version. `--rebuild` fills a new generation and then moves the alias, so readers switch at
once; an update upserts and deletes the changed articles' rows in the live generation and then bumps the
version. The live generation is `<gen>.<version>`, so every replica's poller notices either.

Japanese analysis stays ours (`rag.japanese.bm25_document_terms`, as in the folder store); Milvus's analysers
(`standard`, `jieba` in milvus-lite) never see Japanese. The issue names two ways to keep BM25 equal to the
folder store's. Measured with `python bench/milvus_terms.py --uri http://127.0.0.1:19530` (sample corpus, its
30 questions, BM25 top 5 against the folder store's, rows flushed into a segment; then one article changed and
updated in place):

  - pre-analysed terms (each term an opaque token, `w` + 16 hex digits of its SHA-1, which the `standard`
    analyser keeps whole) under Milvus's BM25 function: 30/30 after the build, 29/30 after the update:
    milvus-lite keeps BM25 statistics per segment (its own TODO), so the upserted rows, in the memtable, are
    scored with the statistics of those few rows alone;
  - our own sparse vectors: each passage's Lucene BM25 term weights tf / (tf + k1 (1 - b + b dl / avgdl)),
    searched by inner product with the question's terms weighted by their IDF: 30/30 after the build and after
    the update, with equal scores.

so the second is used. The IDF comes from the document frequencies the store keeps itself (`_terms`, updated
by every write), not from a `TEXT_MATCH` count, which took 1.7-2.1 s per term on 11,387 passages in milvus-lite
(`bench/milvus.py`'s subset). An update weighs the rows it writes with the new average length and leaves the others
as they were (`--rebuild` re-weighs them all). Term ids are 32 bits of the term's SHA-1 (Milvus's sparse
dimensions are 32-bit).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import date, datetime, timezone
from pathlib import Path
from tempfile import gettempdir
from urllib.parse import urlsplit

import numpy as np
from pydantic import SecretStr

from rag.embeddings import Embedder
from rag.errors import IndexDamaged, IndexNotBuilt, InvalidSetting, RagError, StoreUnavailable
from rag.index.folder import BuildLock, library_versions, text_hash
from rag.index.manifest import (BM25_DOCUMENTS, FORMAT_VERSION, BuildInfo, Counts, DenseInfo, Manifest, ModelInfo,
                                TermsInfo)
from rag.index.store import BuildProgress, Description, Passage, citing
from rag.japanese import BM25_ANALYSIS, DROPPED_POS, bm25_document_terms
from rag.types import Article, Chunk, Facets, Filters, Heading

log = logging.getLogger(__name__)

MANIFEST, FACETS, VERSION, LENGTHS, DENSE = (
    "jrag.manifest", "jrag.facets", "jrag.version", "jrag.lengths", "jrag.dense_index")
# How a build indexes the vectors (RAG_MILVUS_DENSE_INDEX): FLAT is exact (the folder store's results); HNSW is
# for millions of passages (approximate; its search list `ef` is at least the depth asked for).
DENSE_INDEXES: dict[str, dict] = {"FLAT": {}, "HNSW": {"M": 16, "efConstruction": 200}}
HNSW_EF = 128
NEWEST_ARTICLES = 3
BATCH = 500  # rows per insert or upsert request
BODY_PIECE = 16000  # characters per body piece: at most 64,000 UTF-8 bytes, within a VARCHAR's 65,535
MAX_ARRAY = 4096  # Milvus's largest array capacity (categories and tags over a passage's articles)
TERM_CACHE = 4096
# pymilvus pings every 10 s, idle or not; a gRPC server with the library's defaults (milvus-lite's) allows one
# ping per 5 minutes without data and answers more with GOAWAY "too_many_pings". Ping as it allows, and only
# while a call is under way: a dropped channel reconnects on the next call (`Connection._retried`).
KEEPALIVE = {"grpc.keepalive_time_ms": 300_000, "grpc.keepalive_permit_without_calls": False}
TEXT_FIELDS = ["text", "owners", "n_articles"]  # what a reader keeps of a passage's row
WRITE_TIMEOUT = 600.0  # seconds a build's write, flush or drop may take (RAG_MILVUS_TIMEOUT bounds the reads)


@dataclass(frozen=True)
class MilvusConfig:
    uri: str  # a file path (milvus-lite) or http(s)://host:port
    token: SecretStr  # "user:password" or an API key; empty for none
    collection: str  # the alias readers follow, and the prefix of every collection the store makes
    timeout: float  # seconds any one request may take
    bm25_k1: float
    bm25_b: float
    dense_index: str = "FLAT"  # a key of DENSE_INDEXES

    def __post_init__(self) -> None:
        if self.dense_index not in DENSE_INDEXES:
            raise InvalidSetting(f"unknown RAG_MILVUS_DENSE_INDEX {self.dense_index!r}; choose one of: "
                                 f"{', '.join(DENSE_INDEXES)}")

    @property
    def shown_uri(self) -> str:
        """The URI as messages show it: without any user:password@ it carries."""
        parts = urlsplit(self.uri)
        return parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")).geturl() \
            if parts.hostname and "@" in parts.netloc else self.uri


def term_dimension(term: str) -> int:
    """A term's dimension of the sparse vectors: 32 bits of its SHA-1 (Milvus allows 0 .. 2**32 - 2)."""
    return int(hashlib.sha1(term.encode("utf-8")).hexdigest()[:8], 16) % (2**32 - 1)


@dataclass(frozen=True)
class Lengths:
    """What BM25's length normalisation needs: the passages and their terms, in all."""

    documents: int
    terms: int

    @property
    def average(self) -> float:
        return self.terms / self.documents if self.documents else 1.0


def bm25_weights(terms: Sequence[str], lengths: Lengths, k1: float, b: float) -> dict[int, float]:
    """A passage's sparse vector: Lucene's (bm25s's) term weight of each of its terms, the IDF left to the query."""
    norm = k1 * (1 - b + b * len(terms) / lengths.average)
    vector: dict[int, float] = {}
    for term, tf in Counter(terms).items():
        dimension = term_dimension(term)
        vector[dimension] = vector.get(dimension, 0.0) + tf / (tf + norm)
    return vector


def text_key(hash_: str) -> int:
    """A passage text's row id: stable across updates (60 bits of its SHA-1)."""
    return int(hash_[:15], 16)


def _literal(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def expression(filters: Filters, low: str, high: str) -> str:
    """The filters as a Milvus expression on rows with `categories`, `tags` and a date span [low, high] (ordinals)."""
    parts = []
    if filters.category is not None:
        parts.append(f"ARRAY_CONTAINS(categories, {_literal(filters.category)})")
    if filters.tag is not None:
        parts.append(f"ARRAY_CONTAINS(tags, {_literal(filters.tag)})")
    if filters.date_from is not None:
        parts.append(f"{high} >= {filters.date_from.toordinal()}")
    if filters.date_to is not None:
        parts.append(f"{low} <= {filters.date_to.toordinal()}")
    return " and ".join(parts)


# ---------------------------------------------------------------- the connection


def _quiet_pymilvus() -> None:
    """pymilvus logs every failed call with a traceback on its own handler; ours say what failed, once."""
    logger = logging.getLogger("pymilvus")
    logger.handlers.clear()
    logger.setLevel(logging.CRITICAL + 1)


class Connection:
    """A MilvusClient whose every call has a deadline, reloads a collection a restarted server released, and
    turns the client's exceptions into RagErrors that name the fix (never the client's own text)."""

    def __init__(self, config: MilvusConfig):
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # before gRPC loads: its core writes to stderr
        from pymilvus import MilvusClient

        _quiet_pymilvus()  # after pymilvus configured its logging on import
        self.config = config
        name = config.collection
        if not (name.isascii() and name.replace("_", "a").isalnum() and name[0].isalpha()):
            raise InvalidSetting(f"RAG_MILVUS_COLLECTION {config.collection!r}: use letters, digits and _, "
                                 f"starting with a letter")
        self.client = self._retried("connect", lambda: MilvusClient(
            uri=config.uri, token=config.token.get_secret_value(), timeout=config.timeout,
            grpc_options=KEEPALIVE))

    def _retried(self, what: str, attempt: Callable[[], object]):
        """`attempt()`, once more after a failure to reach the server: a channel the server closed (a restart, a
        GOAWAY for its keep-alive pings) reconnects on the next call. Two quick failures when it is down."""
        try:
            with self.errors(what):
                return attempt()
        except StoreUnavailable as exc:
            if "cannot be reached" not in exc.message:
                raise
            time.sleep(0.2)
            with self.errors(what):
                return attempt()

    @contextmanager
    def errors(self, what: str) -> Iterator[None]:
        from pymilvus.exceptions import ConnectionConfigException, MilvusException

        where = f"Milvus at {self.config.shown_uri}"
        try:
            yield
        except RagError:
            raise
        except ConnectionConfigException:
            raise InvalidSetting(f"RAG_MILVUS_URI {self.config.shown_uri!r} is neither a file path nor "
                                 f"http(s)://host:port") from None
        except MilvusException as exc:
            log.info("milvus %s failed: %r", what, exc)
            text = str(exc.message if hasattr(exc, "message") else exc).lower()
            if "auth" in text or "denied" in text or "token" in text or "credential" in text:
                raise StoreUnavailable(f"{where} refused the credentials: check RAG_MILVUS_TOKEN") from None
            if "deadline" in text or "timeout" in text or "timed out" in text:
                raise StoreUnavailable(f"{where} did not answer within {self.config.timeout:g} s; "
                                       f"try again shortly") from None
            if exc.code == 2 or "connect" in text or "unavailable" in text:
                raise StoreUnavailable(f"{where} cannot be reached: start it, or set RAG_MILVUS_URI") from None
            raise StoreUnavailable(f"{where} failed to {what} (the server log says why)") from None
        except Exception as exc:  # noqa: BLE001  (grpc and the client raise their own types)
            log.info("milvus %s failed: %r", what, exc)
            if "deadline" in str(exc).lower():
                raise StoreUnavailable(f"{where} did not answer within {self.config.timeout:g} s; "
                                       f"try again shortly") from None
            raise StoreUnavailable(f"{where} failed to {what}; try again shortly") from None

    def call(self, method: str, collection: str, **kwargs):
        """client.<method>(collection, ...), loading the collection first when the server has released it."""
        from pymilvus.exceptions import MilvusException

        fn = getattr(self.client, method)

        def attempt():
            try:
                return fn(collection, timeout=self.config.timeout, **kwargs)
            except MilvusException as exc:
                if "released" not in str(exc) and "not loaded" not in str(exc).lower():
                    raise
                self.client.load_collection(collection, timeout=self.config.timeout)
                return fn(collection, timeout=self.config.timeout, **kwargs)

        return self._retried(method, attempt)

    def live(self) -> tuple[str, dict[str, str]] | None:
        """(texts collection, its properties) the alias names, or None when no generation was made live."""
        def attempt():
            if self.config.collection not in self.client.list_aliases(timeout=self.config.timeout)["aliases"]:
                return None
            target = self.client.describe_alias(self.config.collection, timeout=self.config.timeout)
            name = target["collection_name"]
            return name, dict(self.client.describe_collection(name, timeout=self.config.timeout)["properties"])

        return self._retried("read the alias", attempt)

    def generations(self) -> list[str]:
        prefix = self.config.collection + "_g"
        with self.errors("list collections"):
            names = self.client.list_collections(timeout=self.config.timeout)
        return sorted({n[len(self.config.collection) + 1:].rsplit("_", 1)[0] for n in names if n.startswith(prefix)})

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # noqa: BLE001  (closing a channel to a server that went away)
            pass


def _names(prefix: str, gen: str) -> tuple[str, str, str]:
    return f"{prefix}_{gen}_texts", f"{prefix}_{gen}_articles", f"{prefix}_{gen}_terms"


def _generation(texts_collection: str, properties: dict[str, str], prefix: str) -> str:
    return texts_collection[len(prefix) + 1:].removesuffix("_texts") + "." + properties.get(VERSION, "0")


def _manifest(properties: dict[str, str], where: str) -> Manifest:
    try:
        return Manifest.from_dict(json.loads(properties[MANIFEST]))
    except (KeyError, ValueError, TypeError) as exc:
        raise IndexDamaged(f"the index in {where} has no readable manifest: rebuild with `rag index --rebuild`") \
            from exc


class MilvusStore:
    """The Milvus store as configured: the `StoreKind` of `rag/index/store.py`."""

    def __init__(self, config: MilvusConfig):
        self.config = config
        self._held: BuildLock | None = None

    @property
    def where(self) -> str:
        return f"Milvus collection {self.config.collection} at {self.config.shown_uri}"

    def _live(self, connection: Connection) -> tuple[str, dict[str, str]]:
        live = connection.live()
        if live is None:
            raise IndexNotBuilt(f"no index in {self.where}: build one with `rag index` (RAG_STORE=milvus)")
        return live

    def open(self, embedder: Embedder | None = None) -> "MilvusIndex":
        connection = Connection(self.config)
        try:
            name, properties = self._live(connection)
            manifest = _manifest(properties, self.where)
            manifest.check(self.where, embedder)
            return MilvusIndex(connection, name, properties, manifest)
        except BaseException:
            connection.close()
            raise

    @contextmanager
    def lock(self) -> Iterator[None]:
        """One build at a time from this machine (an flock beside the temp files, per URI and collection).
        Builds from several machines against one cluster are the operator's to serialise. Milvus is asked
        first, so a wrong URI or token fails before the model loads."""
        Connection(self.config).close()
        key = hashlib.sha1(f"{self.config.uri}|{self.config.collection}".encode()).hexdigest()[:12]
        self._held = BuildLock(Path(gettempdir()) / f"jrag-milvus-{key}", what=self.where)
        try:
            yield
        finally:
            self._held.release()
            self._held = None

    def writer(self, embedder: Embedder, *, rebuild: bool) -> "MilvusWriter":
        return MilvusWriter(self, embedder, rebuild=rebuild)

    def _read(self) -> tuple[str, dict[str, str]]:
        connection = Connection(self.config)
        try:
            return self._live(connection)
        finally:
            connection.close()

    def live_generation(self) -> str:
        name, properties = self._read()
        return _generation(name, properties, self.config.collection)

    def manifest(self) -> Manifest:
        return _manifest(self._read()[1], self.where)

    def progress(self) -> BuildProgress | None:
        return None  # see MilvusWriter.terms_first


# ---------------------------------------------------------------- reading


UPDATING = StoreUnavailable("the index is being updated; ask again in a moment")


def _article(row: dict) -> Article:
    return Article(
        article_id=row["article_id"], path=row["path"], title=row["title"],
        date=datetime.fromisoformat(row["date"]), url=row["url"], categories=tuple(row["categories"]),
        tags=tuple(row["tags"]), author=row["author"], excerpt=row["excerpt"], body="".join(row["body"]),
        headings=tuple(Heading(**h) for h in row["headings"]), content_hash=row["content_hash"],
        image=row.get("image") or "")


@dataclass(frozen=True)
class Owner:
    """An article holding a passage, as the passage's row keeps it (what filters and date weights need)."""

    article_id: str
    day: int  # date ordinal
    categories: tuple[str, ...]
    tags: tuple[str, ...]

    @classmethod
    def of(cls, article: Article) -> "Owner":
        return cls(article.article_id, article.date.date().toordinal(), article.categories, article.tags)

    def admitted(self, filters: Filters) -> bool:
        return filters.admits(date.fromordinal(self.day), self.categories, self.tags)


def _owners(row: dict) -> list[Owner]:
    return [Owner(o[0], o[1], tuple(o[2]), tuple(o[3])) for o in row["owners"]]


class MilvusIndex:
    """The live generation as read through Milvus: every search and lookup is a request, no index in memory."""

    def __init__(self, connection: Connection, texts: str, properties: dict[str, str], manifest: Manifest):
        self.connection, self.manifest = connection, manifest
        prefix = connection.config.collection
        self.generation = _generation(texts, properties, prefix)
        base = texts.removesuffix("_texts")
        self.texts, self.articles, self.terms = texts, base + "_articles", base + "_terms"
        facets = json.loads(properties.get(FACETS, "{}"))
        self._facets = facets
        self._num_texts = manifest.counts.distinct_texts
        self._hnsw = properties.get(DENSE) == "HNSW"
        # Rows read for this generation's questions: a search returns its passages' rows with the hits
        self._text_rows: dict[int, dict] = {}
        self._article_rows: dict[str, dict] = {}
        self._idf: dict[str, float] = {}
        # milvus-lite builds a segment's sparse index at its first search (4-12 s for 11,387 passages here):
        # done now, while the engine loads, rather than by a reader's first question
        with connection.errors("open the index"):
            connection.client.search(self.texts, data=[{0: 1.0}], anns_field="sparse", limit=1,
                                     search_params={"metric_type": "IP"}, timeout=WRITE_TIMEOUT)

    # -- search

    def _search(self, anns_field: str, data, metric: str, depth: int, filters: Filters,
                score: Callable[[float], float], hnsw: bool = False) -> dict[int, float]:
        """The `depth` best passages passing the filters. The pushed expression is exact for a passage of one
        article; one of several articles passes it when any of them has the category, any the tag, and the
        span of their dates meets the range, so those are checked here, asking deeper until `depth` are left."""
        limit = depth
        while True:
            hits = self.connection.call("search", self.texts, data=[data], anns_field=anns_field, limit=limit,
                                        filter=expression(filters, "date_min", "date_max"),
                                        output_fields=TEXT_FIELDS, search_params={
                                            "metric_type": metric,
                                            "params": {"ef": max(limit, HNSW_EF)} if hnsw else {}})[0]
            self._keep({int(h.id): {f: h["entity"][f] for f in TEXT_FIELDS} for h in hits})
            found = {int(h.id): score(float(h.distance)) for h in hits
                     if not filters or h["entity"]["n_articles"] == 1 or self._admitted(int(h.id), filters)}
            if len(found) >= depth or len(hits) < limit or limit >= 16384:
                return dict(list(found.items())[:depth])
            limit = min(limit * 2, 16384)

    def _admitted(self, text_id: int, filters: Filters) -> bool:
        return any(o.admitted(filters) for o in _owners(self.text_row(text_id)))

    def dense_search(self, vector: np.ndarray, depth: int, filters: Filters) -> dict[int, float]:
        return self._search("vector", np.asarray(vector, np.float32).tolist(), "IP", depth, filters, float,
                            hnsw=self._hnsw)

    def term_search(self, terms: Sequence[str], depth: int, filters: Filters) -> dict[int, float]:
        query: dict[int, float] = {}
        weights = self._weights(terms)
        for term, count in Counter(terms).items():  # a repeated term counts again, as in bm25s
            dimension = term_dimension(term)
            query[dimension] = query.get(dimension, 0.0) + count * weights[term]
        if not query:
            return {}
        found = self._search("sparse", query, "IP", depth, filters, float)
        return {t: s for t, s in found.items() if s > 0}

    def term_weight(self, term: str) -> float:
        return self._weights([term])[term]

    def _weights(self, terms: Sequence[str]) -> dict[str, float]:
        """The IDF of each term (bm25s's: log(1 + (N - df + 0.5) / (df + 0.5))), one request for those not kept."""
        missing = {t: term_dimension(t) for t in terms if t not in self._idf}
        if missing:
            rows = self.connection.call("get", self.terms, ids=sorted(set(missing.values())),
                                        output_fields=["dimension", "df"])
            df = {int(r["dimension"]): int(r["df"]) for r in rows}
            if len(self._idf) > TERM_CACHE:
                self._idf.clear()
            for term, dimension in missing.items():
                n = df.get(dimension, 0)
                self._idf[term] = math.log(1 + (self._num_texts - n + 0.5) / (n + 0.5))
        return {t: self._idf[t] for t in terms}

    def matches_any(self, filters: Filters) -> bool:
        if not filters:
            return True
        return bool(self.connection.call("query", self.articles, filter=expression(filters, "day", "day"),
                                         output_fields=["article_id"], limit=1))

    # -- lookups

    def _keep(self, rows: dict[int, dict]) -> None:
        if len(self._text_rows) + len(rows) > TERM_CACHE:
            self._text_rows.clear()
        self._text_rows.update(rows)

    def text_rows(self, text_ids: Iterable[int]) -> dict[int, dict]:
        """The rows (TEXT_FIELDS) of the passages, in one request for those not kept already."""
        wanted = list(dict.fromkeys(text_ids))
        missing = [t for t in wanted if t not in self._text_rows]
        if missing:
            rows = self.connection.call("get", self.texts, ids=missing, output_fields=["text_id", *TEXT_FIELDS])
            self._keep({int(r["text_id"]): r for r in rows})
        if any(t not in self._text_rows for t in wanted):  # found by a search a moment ago: deleted by an update
            raise UPDATING
        return {t: self._text_rows[t] for t in wanted}

    def text_row(self, text_id: int) -> dict:
        return self.text_rows([text_id])[text_id]

    def article_row(self, article_id: str) -> dict | None:
        return self.article_rows([article_id]).get(article_id)

    def article_rows(self, article_ids: Iterable[str]) -> dict[str, dict]:
        """The articles' rows, in one request for those not kept already."""
        wanted = list(dict.fromkeys(article_ids))
        missing = [a for a in wanted if a not in self._article_rows]
        if missing:
            if len(self._article_rows) + len(missing) > TERM_CACHE:
                self._article_rows.clear()
            rows = self.connection.call("get", self.articles, ids=missing, output_fields=["*"])
            self._article_rows.update({r["article_id"]: r for r in rows})
        return {a: self._article_rows[a] for a in wanted if a in self._article_rows}

    def passage(self, text_id: int, filters: Filters) -> Passage:
        return self.passages([text_id], filters)[0]

    def passages(self, text_ids: Sequence[int], filters: Filters) -> list[Passage]:
        """The passages as cited, with two requests at most (their rows, their citing articles' rows)."""
        for fresh in (False, True):  # rows cached before an update went live are read again once
            if fresh:
                self._text_rows.clear()
                self._article_rows.clear()
            rows = self.text_rows(text_ids)
            cited = {t: citing(_owners(rows[t]), lambda o: o.admitted(filters)) for t in text_ids}
            articles = self.article_rows(first.article_id for first, _ in cited.values())
            found = []
            for text_id in text_ids:
                first, others = cited[text_id]
                article_row, row = articles.get(first.article_id), rows[text_id]
                chunk = next((Chunk(first.article_id, c[0], row["text"], c[2], c[3], tuple(c[4]))
                              for c in article_row["chunks"] if c[1] == text_id), None) if article_row else None
                if chunk is None:
                    break
                found.append(Passage(text_id, chunk, _article(article_row), tuple(o.article_id for o in others),
                                     int(row["n_articles"])))
            else:
                return found
        raise UPDATING

    def recurrence(self, text_id: int) -> int:
        return int(self.text_row(text_id)["n_articles"])

    def passage_dates(self, text_id: int) -> list[date]:
        return [date.fromordinal(o.day) for o in _owners(self.text_row(text_id))]

    def newest_date(self) -> date | None:
        last = self._facets.get("last")
        return date.fromisoformat(last) if last else None

    def facets(self) -> Facets:
        f = self._facets
        first, last = f.get("first"), f.get("last")
        newest = [self.article(a) for a in f.get("newest", [])]
        return Facets(f.get("categories", []), date.fromisoformat(first) if first else None,
                      date.fromisoformat(last) if last else None, [a for a in newest if a])

    def article(self, article_id: str) -> Article | None:
        row = self.article_row(article_id)
        return _article(row) if row else None

    def chunks_of_article(self, article_id: str) -> list[Chunk]:
        row = self.article_row(article_id)
        if row is None:
            return []
        chunks = row["chunks"]
        texts = self.text_rows(c[1] for c in chunks)
        return [Chunk(article_id, c[0], texts[c[1]]["text"], c[2], c[3], tuple(c[4])) for c in chunks]

    def close(self) -> None:
        self.connection.close()


# ---------------------------------------------------------------- writing


def _texts_schema(client, dim: int, dense_index: str):
    from pymilvus import DataType

    schema = client.create_schema(auto_id=False)
    schema.add_field("text_id", DataType.INT64, is_primary=True)
    schema.add_field("text", DataType.VARCHAR, max_length=65535)
    schema.add_field("title_article", DataType.VARCHAR, max_length=1024)  # whose title BM25 indexes with it
    schema.add_field("length", DataType.INT64)  # how many terms BM25 counted
    schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)  # bm25_weights of the terms
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field("owners", DataType.JSON)  # [[article_id, day, categories, tags]] in article_id order
    schema.add_field("n_articles", DataType.INT64)
    schema.add_field("categories", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=MAX_ARRAY,
                     max_length=1024)
    schema.add_field("tags", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=MAX_ARRAY, max_length=1024)
    schema.add_field("date_min", DataType.INT64)
    schema.add_field("date_max", DataType.INT64)
    index = client.prepare_index_params()
    # Index parameters go nested, as the wire's JSON `params` entry: Milvus reads it, milvus-lite reads only it
    index.add_index("vector", index_type=dense_index, metric_type="IP", params={"params": DENSE_INDEXES[dense_index]})
    index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
    return schema, index


def _articles_schema(client):
    from pymilvus import DataType

    schema = client.create_schema(auto_id=False)
    schema.add_field("article_id", DataType.VARCHAR, is_primary=True, max_length=1024)
    for name, length in (("path", 4096), ("title", 8192), ("date", 64), ("url", 8192), ("author", 1024),
                         ("excerpt", 65535), ("content_hash", 128), ("image", 8192)):
        schema.add_field(name, DataType.VARCHAR, max_length=length)
    schema.add_field("day", DataType.INT64)
    schema.add_field("categories", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=256, max_length=1024)
    schema.add_field("tags", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=256, max_length=1024)
    schema.add_field("body", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=64, max_length=65535)
    schema.add_field("headings", DataType.JSON)
    schema.add_field("chunks", DataType.JSON)  # [[ordinal, text_id, char_start, char_end, heading_path]]
    schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)  # Milvus wants a vector field in every collection
    index = client.prepare_index_params()
    index.add_index("unused", index_type="FLAT", metric_type="L2")
    return schema, index


def _terms_schema(client):
    from pymilvus import DataType

    schema = client.create_schema(auto_id=False)
    schema.add_field("dimension", DataType.INT64, is_primary=True)  # term_dimension of the terms
    schema.add_field("df", DataType.INT64)  # passages whose sparse vector has the dimension
    schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)
    index = client.prepare_index_params()
    index.add_index("unused", index_type="FLAT", metric_type="L2")
    return schema, index


def _df_rows(df: dict[int, int]) -> list[dict]:
    return [{"dimension": d, "df": n, "unused": [0.0, 0.0]} for d, n in df.items()]


def _article_row(article: Article, chunks: list[Chunk]) -> dict:
    body = article.body
    return {
        "article_id": article.article_id, "path": article.path, "title": article.title,
        "date": article.date.isoformat(), "day": article.date.date().toordinal(), "url": article.url,
        "author": article.author, "excerpt": article.excerpt, "content_hash": article.content_hash,
        "image": article.image, "categories": list(article.categories), "tags": list(article.tags),
        "body": [body[i:i + BODY_PIECE] for i in range(0, len(body), BODY_PIECE)] or [""],
        "headings": [asdict(h) for h in article.headings],
        "chunks": [[c.ordinal, text_key(text_hash(c.text)), c.char_start, c.char_end, list(c.heading_path)]
                   for c in chunks],
        "unused": [0.0, 0.0],
    }


@dataclass(frozen=True)
class _Text:
    """A passage text's row as the writer assembles it."""

    hash: str
    text: str
    owners: tuple[Owner, ...]  # in article_id order
    title_article: str
    title: str
    vector: np.ndarray

    @property
    def terms(self) -> list[str]:
        return bm25_document_terms(self.title + "\n" + self.text)

    def row(self, lengths: Lengths, k1: float, b: float) -> dict:
        days = [o.day for o in self.owners]
        terms = self.terms
        return {
            "text_id": text_key(self.hash), "text": self.text, "title_article": self.title_article,
            "length": len(terms), "sparse": bm25_weights(terms, lengths, k1, b),
            "vector": self.vector.tolist(),
            "owners": [[o.article_id, o.day, list(o.categories), list(o.tags)] for o in self.owners],
            "n_articles": len(self.owners),
            "categories": sorted({c for o in self.owners for c in o.categories})[:MAX_ARRAY],
            "tags": sorted({t for o in self.owners for t in o.tags})[:MAX_ARRAY],
            "date_min": min(days), "date_max": max(days),
        }


def _batches(rows: list, size: int = BATCH) -> Iterable[list]:
    for i in range(0, len(rows), size):
        yield rows[i:i + size]


class MilvusWriter:
    """Applies puts and deletes at `commit`: into a new generation (first build, `--rebuild`), or in place,
    upserting and deleting only the changed articles' rows, then bumping the version readers poll."""

    def __init__(self, store: MilvusStore, embedder: Embedder, *, rebuild: bool):
        self.store, self.config, self.embedder = store, store.config, embedder
        self.connection = Connection(self.config)
        self.live: tuple[str, dict[str, str]] | None = None
        self.previous: Manifest | None = None
        self.files: dict[str, str] = {}
        self._ids: dict[str, str] = {}  # path -> article_id of the live articles
        try:
            live = self.connection.live()
            if live is not None and not rebuild:
                self.previous = _manifest(live[1], store.where)
                self.previous.check(store.where, embedder, searching=False)
                self.live = live
                articles = live[0].removesuffix("_texts") + "_articles"
                for row in self._every(articles, ["article_id", "path", "content_hash"]):
                    self.files[row["path"]] = row["content_hash"]
                    self._ids[row["path"]] = row["article_id"]
        except BaseException:
            self.connection.close()
            raise
        self._puts: dict[str, tuple[Article, list[Chunk]]] = {}
        self._deleted: set[str] = set()
        self._new_vectors: dict[str, np.ndarray] = {}
        self._known: dict[int, np.ndarray] | None = None
        self._reused: set[str] = set()  # paths whose live rows stay as they are (previous_chunks gave them)

    def _every(self, collection: str, fields: list[str]) -> Iterator[dict]:
        with self.connection.errors("read rows"):
            iterator = self.connection.client.query_iterator(collection, batch_size=1000, output_fields=fields,
                                                             timeout=WRITE_TIMEOUT)
            while rows := iterator.next():
                yield from rows
            iterator.close()

    @property
    def _texts(self) -> str:
        return self.live[0]

    @property
    def _articles(self) -> str:
        return self.live[0].removesuffix("_texts") + "_articles"

    @property
    def _terms(self) -> str:
        return self.live[0].removesuffix("_texts") + "_terms"

    def previous_chunks(self, article: Article, chunker: dict) -> list[Chunk] | None:
        if not (self.previous and self.previous.chunker == chunker
                and self.files.get(article.path) == article.content_hash):
            return None
        rows = self.connection.call("get", self._articles, ids=[article.article_id], output_fields=["body", "chunks"])
        if not rows or "".join(rows[0]["body"]) != article.body:
            return None
        self._reused.add(article.path)
        texts = self._text_rows({c[1] for c in rows[0]["chunks"]}, ["text"])
        return [Chunk(article.article_id, c[0], texts[c[1]]["text"], c[2], c[3], tuple(c[4]))
                for c in rows[0]["chunks"]]

    def known_vector(self, hash_: str) -> np.ndarray | None:
        """The live passages' vectors are read once, on the first call (4 bytes x dim per passage)."""
        if self.live is None:
            return None
        if self._known is None:
            self._known = {int(r["text_id"]): np.asarray(r["vector"], np.float32)
                           for r in self._every(self._texts, ["text_id", "vector"])}
        return self._known.get(text_key(hash_))

    def put(self, article: Article, chunks: list[Chunk]) -> None:
        self._puts[article.path] = (article, chunks)
        self._deleted.discard(article.path)

    def delete(self, path: str) -> None:
        self._puts.pop(path, None)
        self._deleted.add(path)

    # Milvus answers only with every vector in (no terms-only generation), and a build's progress and pending
    # vectors stay in the building process: an interrupted build into Milvus embeds its passages again.
    terms_first = False

    def put_vectors(self, vectors: dict[str, np.ndarray]) -> None:
        self._new_vectors.update(vectors)

    def record_progress(self, progress: BuildProgress) -> None:
        pass

    def _vector(self, hash_: str) -> np.ndarray:
        # float16 and back, as the folder store keeps them: both stores rank on the same vectors
        vector = self._new_vectors.get(hash_)
        vector = vector if vector is not None else self.known_vector(hash_)
        return np.asarray(vector, np.float32).astype(np.float16).astype(np.float32)

    def _text_rows(self, ids: Iterable[int], fields: list[str]) -> dict[int, dict]:
        rows: dict[int, dict] = {}
        ids = sorted(ids)
        for batch in _batches(ids, 1000):
            for row in self.connection.call("get", self._texts, ids=batch, output_fields=["text_id", *fields]):
                rows[int(row["text_id"])] = row
        return rows

    # -- commit

    def commit(self, description: Description) -> Manifest:
        if self.live is None:
            return self._commit_new(description)
        return self._commit_in_place(description)

    def _texts_of(self, contents: list[tuple[Article, list[Chunk]]]) -> dict[str, _Text]:
        """Every passage text of `contents` with its owners; the title is the first holding article's."""
        texts: dict[str, _Text] = {}
        owners: dict[str, list[Owner]] = {}
        for article, chunks in contents:
            for chunk in chunks:
                h = text_hash(chunk.text)
                if h not in texts:
                    texts[h] = _Text(h, chunk.text, (), article.article_id, article.title, np.empty(0))
                    owners[h] = []
                if not owners[h] or owners[h][-1].article_id != article.article_id:
                    owners[h].append(Owner.of(article))
        return {h: replace(t, owners=tuple(sorted({o.article_id: o for o in owners[h]}.values(),
                                                  key=lambda o: o.article_id)), vector=self._vector(h))
                for h, t in texts.items()}

    def _commit_new(self, description: Description) -> Manifest:
        contents = list(self._puts.values())
        texts = self._texts_of(contents)
        client, prefix = self.connection.client, self.config.collection
        gen = "g" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        names = texts_name, articles_name, terms_name = _names(prefix, gen)
        with self.connection.errors("write the new generation"):
            try:
                schema, index = _texts_schema(client, self.embedder.dim, self.config.dense_index)
                client.create_collection(texts_name, schema=schema, index_params=index, timeout=WRITE_TIMEOUT)
                for name, (schema, index) in ((articles_name, _articles_schema(client)),
                                              (terms_name, _terms_schema(client))):
                    client.create_collection(name, schema=schema, index_params=index, timeout=WRITE_TIMEOUT)
                for batch in _batches([_article_row(a, c) for a, c in contents]):
                    client.insert(articles_name, batch, timeout=WRITE_TIMEOUT)
                lengths = Lengths(len(texts), sum(len(t.terms) for t in texts.values()))
                k1, b = self.config.bm25_k1, self.config.bm25_b
                rows = [t.row(lengths, k1, b) for t in texts.values()]
                for batch in _batches(rows):
                    client.insert(texts_name, batch, timeout=WRITE_TIMEOUT)
                for batch in _batches(_df_rows(Counter(d for row in rows for d in row["sparse"])), 5000):
                    client.insert(terms_name, batch, timeout=WRITE_TIMEOUT)
                manifest = self._manifest(description, len(contents), sum(len(c) for _, c in contents), len(texts))
                self._set_properties(texts_name, manifest, [(a.article_id, a.date, a.categories) for a, _ in contents],
                                     lengths, version=0)
                for name in names:  # sealed segments: indexed once, not at every search
                    client.flush(name, timeout=WRITE_TIMEOUT)
                    client.load_collection(name, timeout=WRITE_TIMEOUT)
            except BaseException:
                for name in names:
                    try:
                        client.drop_collection(name, timeout=WRITE_TIMEOUT)
                    except Exception:  # noqa: BLE001  (the first error is the one to report)
                        pass
                raise
            previous = self.connection.live()
            if previous is None:
                client.create_alias(texts_name, prefix, timeout=WRITE_TIMEOUT)
            else:
                client.alter_alias(texts_name, prefix, timeout=WRITE_TIMEOUT)
        self._drop_old(keep={gen, *([previous[0][len(prefix) + 1:].removesuffix("_texts")] if previous else [])})
        return manifest

    def _drop_old(self, keep: set[str]) -> None:
        """Every generation but the live one and its predecessor (a replica may still be reading it)."""
        for gen in self.connection.generations():
            if gen not in keep:
                for name in _names(self.config.collection, gen):
                    with self.connection.errors("drop an old generation"):
                        if self.connection.client.has_collection(name, timeout=WRITE_TIMEOUT):
                            self.connection.client.drop_collection(name, timeout=WRITE_TIMEOUT)

    def _commit_in_place(self, description: Description) -> Manifest:
        """Articles first, then texts, then what went: a reader never meets a passage whose article is missing."""
        gone_ids = {self._ids[p] for p in self._deleted if p in self._ids}
        changed = [(a, c) for a, c in self._puts.values() if a.path not in self._reused]
        replaced_ids = {self._ids[a.path] for a, _ in changed if a.path in self._ids}
        old_articles = {r["article_id"]: r for r in self._get_articles(gone_ids | replaced_ids)}
        touched = {c[1] for r in old_articles.values() for c in r["chunks"]}
        new_texts = self._texts_of(changed)
        touched |= {text_key(h) for h in new_texts}
        current = self._text_rows(touched, ["text_id", "text", "owners", "title_article", "vector", "sparse",
                                            "length"])
        leaving = gone_ids | replaced_ids
        arriving = {a.article_id: a for a, _ in changed}
        written, removed = [], []
        for text_id in touched:
            row = current.get(text_id)
            kept = [o for o in (_owners(row) if row else []) if o.article_id not in leaving]
            fresh = next((t for t in new_texts.values() if text_key(t.hash) == text_id), None)
            owners = {o.article_id: o for o in kept}
            if fresh:
                owners.update({o.article_id: o for o in fresh.owners})
            if not owners:
                removed.append(text_id)
                continue
            ordered = tuple(sorted(owners.values(), key=lambda o: o.article_id))
            title_article = row["title_article"] if row and row["title_article"] in owners else (
                fresh.title_article if fresh else ordered[0].article_id)
            title = arriving[title_article].title if title_article in arriving else self._title(title_article)
            text = fresh.text if fresh else row["text"]
            vector = fresh.vector if fresh else np.asarray(row["vector"], np.float32)
            written.append(_Text(text_hash(text), text, ordered, title_article, title, vector))
        before = Lengths(**json.loads(self.live[1][LENGTHS]))
        old_terms = sum(int(r["length"]) for r in current.values())
        lengths = Lengths(before.documents - len(current) + len(written),
                          before.terms - old_terms + sum(len(t.terms) for t in written))
        upserts = [t.row(lengths, self.config.bm25_k1, self.config.bm25_b) for t in written]
        delta = Counter(d for row in upserts for d in row["sparse"])
        delta.subtract(Counter(int(d) for row in current.values() for d in row["sparse"]))
        changed_df = [d for d, n in delta.items() if n]
        df = {int(r["dimension"]): int(r["df"]) for batch in _batches(changed_df, 1000)
              for r in self.connection.call("get", self._terms, ids=batch, output_fields=["dimension", "df"])}
        df = {d: df.get(d, 0) + delta[d] for d in changed_df}
        client = self.connection.client
        with self.connection.errors("update the index"):
            for batch in _batches([_article_row(a, c) for a, c in changed]):
                client.upsert(self._articles, batch, timeout=WRITE_TIMEOUT)
            for batch in _batches(upserts):
                client.upsert(self._texts, batch, timeout=WRITE_TIMEOUT)
            for batch in _batches(removed, 1000):
                client.delete(self._texts, ids=batch, timeout=WRITE_TIMEOUT)
            stale = sorted(leaving - set(arriving))
            for batch in _batches(stale, 1000):
                client.delete(self._articles, ids=batch, timeout=WRITE_TIMEOUT)
            for batch in _batches(_df_rows({d: n for d, n in df.items() if n > 0}), 5000):
                client.upsert(self._terms, batch, timeout=WRITE_TIMEOUT)
            for batch in _batches([d for d, n in df.items() if n <= 0], 1000):
                client.delete(self._terms, ids=batch, timeout=WRITE_TIMEOUT)
            for name in (self._articles, self._texts, self._terms):
                client.flush(name, timeout=WRITE_TIMEOUT)
        articles = [(r["article_id"], datetime.fromisoformat(r["date"]), r["categories"])
                    for r in self._every(self._articles, ["article_id", "date", "categories"])]
        counts = self._counts()
        manifest = self._manifest(description, *counts)
        self._set_properties(self._texts, manifest, articles, lengths, version=int(self.live[1].get(VERSION, "0")) + 1)
        return manifest

    def _get_articles(self, ids: set[str]) -> list[dict]:
        rows = []
        for batch in _batches(sorted(ids), 1000):
            rows += self.connection.call("get", self._articles, ids=batch, output_fields=["article_id", "chunks"])
        return rows

    def _title(self, article_id: str) -> str:
        rows = self.connection.call("get", self._articles, ids=[article_id], output_fields=["title"])
        return rows[0]["title"] if rows else ""

    def _counts(self) -> tuple[int, int, int]:
        articles = texts = chunks = 0
        for row in self._every(self._articles, ["chunks"]):
            articles, chunks = articles + 1, chunks + len(row["chunks"])
        rows = self.connection.call("query", self._texts, filter="", output_fields=["count(*)"])
        texts = int(rows[0]["count(*)"])
        return articles, chunks, texts

    def _manifest(self, d: Description, articles: int, chunks: int, texts: int) -> Manifest:
        dense = self.config.dense_index
        return Manifest(
            format_version=FORMAT_VERSION,
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            model=ModelInfo.of(self.embedder), chunker=d.chunker,
            dense=DenseInfo("milvus", f"{dense} inner product {DENSE_INDEXES[dense] or ''}".strip(),
                            "float16 values as float32"),
            bm25=TermsInfo("milvus sparse inner product (Lucene BM25 weights, stored document frequencies)",
                           BM25_DOCUMENTS, BM25_ANALYSIS, sorted(DROPPED_POS), self.config.bm25_k1, self.config.bm25_b),
            source=d.source, counts=Counts(articles, chunks, texts, chunks - texts, d.malformed_files),
            build=BuildInfo(round(time.perf_counter() - d.started, 2), round(d.embed_seconds, 2), d.embedded,
                            d.reused),
            files={}, versions=library_versions(("pymilvus", "milvus-lite")))

    def _set_properties(self, texts_name: str, manifest: Manifest,
                        articles: list[tuple[str, datetime, Sequence[str]]], lengths: Lengths, version: int) -> None:
        """The manifest (its `files` are the article rows' own), the facets of the (id, date, categories) of
        every article, the passages' lengths and the version readers poll."""
        dated = sorted(articles, key=lambda a: a[1], reverse=True)
        days = [a[1].date() for a in articles]
        facets = {"categories": sorted({c for a in articles for c in a[2]}),
                  "first": min(days).isoformat() if days else None, "last": max(days).isoformat() if days else None,
                  "newest": [a[0] for a in dated[:NEWEST_ARTICLES]]}
        with self.connection.errors("record the manifest"):
            self.connection.client.alter_collection_properties(texts_name, properties={
                MANIFEST: json.dumps(asdict(manifest), ensure_ascii=False),
                FACETS: json.dumps(facets, ensure_ascii=False),
                LENGTHS: json.dumps(asdict(lengths)), DENSE: self.config.dense_index, VERSION: str(version)},
                timeout=WRITE_TIMEOUT)

    def close(self) -> None:
        self.connection.close()
