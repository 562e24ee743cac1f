"""The description a built index keeps of itself, and the one check that it suits the configured parts.

Query time must use what build time used: the model and its prompts, a backend of the same vector
space, the same BM25 analysis. Every store writes this manifest and `check` is the only place that
compares it with the running configuration.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rag.embeddings import Embedder, vector_space
from rag.errors import IndexMismatch
from rag.japanese import BM25_ANALYSIS

FORMAT_VERSION = 2  # 2: BM25 term counts (`rag/index/terms.py`) in place of bm25s's scores; retired rows
READABLE_BY_WRITERS = (1, 2)  # generations an update reads its passages and vectors from
# What BM25 indexes per distinct passage. The article title names the entity that questions ask about
# and a paragraph often leaves implicit (measured: allforces dev hit@1 0.837 -> 0.907 for BM25 alone).
BM25_DOCUMENTS = "title of the first article holding the passage + passage"


@dataclass(frozen=True)
class ModelInfo:
    id: str
    backend: str
    dim: int
    query_prompt: str
    passage_prompt: str

    @classmethod
    def of(cls, embedder: Embedder) -> "ModelInfo":
        return cls(embedder.model_id, embedder.backend, embedder.dim, embedder.query_prompt, embedder.passage_prompt)


@dataclass(frozen=True)
class DenseInfo:
    library: str
    search: str
    storage: str
    # Passages without a vector yet: a build's first, terms-only generation answers by BM25 alone while the
    # model embeds them (0 once the build finished).
    missing: int = 0


@dataclass(frozen=True)
class TermsInfo:
    """The BM25 side: how passages became terms, and the scoring parameters."""

    library: str
    documents: str
    tokenizer: str  # the analysis (japanese.BM25_ANALYSIS at build time)
    dropped_pos: list[str]
    k1: float
    b: float


@dataclass(frozen=True)
class Counts:
    articles: int
    chunks: int
    distinct_texts: int
    duplicate_chunks: int
    malformed_files: int
    # stored rows of passages: the distinct texts, and those an update retired (no article carries them any more)
    rows: int = -1

    def __post_init__(self):
        if self.rows < 0:  # a generation from before rows were retired
            object.__setattr__(self, "rows", self.distinct_texts)


@dataclass(frozen=True)
class BuildInfo:
    seconds: float
    embed_seconds: float
    embedded: int
    reused: int


@dataclass(frozen=True)
class Manifest:
    format_version: int
    created_at: str
    model: ModelInfo
    chunker: dict  # the ChunkerConfig the chunks were made with, as a dict
    dense: DenseInfo
    bm25: TermsInfo
    source: dict[str, str]  # where the articles came from (corpus folder, site URL, rule set)
    counts: Counts
    build: BuildInfo
    files: dict[str, str]  # corpus path -> sha256 of the file: what an update compares
    versions: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> "Manifest":
        model = data["model"]
        return cls(
            format_version=data.get("format_version", 0), created_at=data["created_at"],
            model=ModelInfo(model["id"], model.get("backend", "torch"), model["dim"], model["query_prompt"],
                            model["passage_prompt"]),
            chunker=data["chunker"],
            dense=DenseInfo(**{"storage": "float32", **data["dense"]}),
            bm25=TermsInfo(**{"documents": "", "dropped_pos": [], **data["bm25"]}),
            source=data.get("source", {}), counts=Counts(**data["counts"]), build=BuildInfo(**data["build"]),
            files=data["files"], versions=data.get("versions", {}))

    @classmethod
    def read(cls, path: Path) -> "Manifest":
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))

    @property
    def has_vectors(self) -> bool:
        """Every passage has its vector: dense and hybrid search may run (else BM25 alone)."""
        return self.dense.missing == 0

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), ensure_ascii=False, indent=2), encoding="utf-8")

    def check(self, where: str, embedder: Embedder | None = None, *, searching: bool = True) -> None:
        """Raise IndexMismatch, naming the fix, when this index cannot serve the configured parts.

        `embedder`: the model that will embed questions (and passages of an update). `searching`: the
        BM25 terms will be searched (an update rewrites them, so it accepts another analysis).
        """
        if self.format_version != FORMAT_VERSION and (searching or self.format_version not in READABLE_BY_WRITERS):
            fix = ("run `rag index` to rewrite it (the stored vectors are reused)"
                   if self.format_version in READABLE_BY_WRITERS else "rebuild with `rag index --rebuild`")
            raise IndexMismatch(f"index {where} has format {self.format_version}, this version reads "
                                f"{FORMAT_VERSION}: {fix}")
        if embedder is not None:
            self._check_model(where, ModelInfo.of(embedder))
        if searching and self.bm25.tokenizer != BM25_ANALYSIS:
            raise IndexMismatch(f"index {where} holds BM25 terms of another analysis ({self.bm25.tokenizer!r}): "
                                f"run `rag index` to rebuild it (the stored vectors are reused)")

    def _check_model(self, where: str, wanted: ModelInfo) -> None:
        built = self.model
        if (built.id, built.dim, built.query_prompt, built.passage_prompt) != (
                wanted.id, wanted.dim, wanted.query_prompt, wanted.passage_prompt):
            raise IndexMismatch(
                f"index {where} was built with model {built.id} ({built.dim} dims, prompts "
                f"{built.query_prompt!r}/{built.passage_prompt!r}) but the configured model is "
                f"{wanted.id} ({wanted.dim} dims, prompts {wanted.query_prompt!r}/"
                f"{wanted.passage_prompt!r}): rebuild with `rag index --rebuild` or configure the index's model")
        if vector_space(built.backend) != vector_space(wanted.backend):
            raise IndexMismatch(
                f"index {where} was built with embedding backend {built.backend}, whose vectors do not match "
                f"those of the configured backend {wanted.backend}: set RAG_EMBEDDING_BACKEND={built.backend} "
                f"or rebuild with `rag index --rebuild`")
