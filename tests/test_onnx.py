"""The `onnx` embedding backend that `rag serve` uses: the same vectors as torch fp32 (cosine >= 0.9999, questions
and passages, the real model), so an index built with torch serves the same passages."""

from __future__ import annotations

import numpy as np
import pytest

from rag import parts
from rag.embeddings import vector_space
from rag.engine import Engine
from rag.index import FolderIndex
from rag.service.launcher import serving_settings
from rag.settings import DEFAULT_MODEL_DIR, Settings
from tests.conftest import PROJECT_ROOT

MODEL = str(PROJECT_ROOT / DEFAULT_MODEL_DIR)
QUESTIONS = ["富士山の標高は？", "東京スカイツリーの高さは？", "将棋盤のマスの数は？", "桜の開花はいつ？",
             "ChatGPTを作った会社は？", "琵琶湖の面積は何平方キロメートル？"]


def sample_passages(index_dir, n: int = 40) -> list[str]:
    index = FolderIndex.open(index_dir)
    try:
        return [row[0] for row in index.db.execute("SELECT text FROM texts ORDER BY text_id LIMIT ?", (n,))]
    finally:
        index.close()


@pytest.fixture(scope="module")
def onnx_embedder():
    return parts.embedder(Settings(model=MODEL, embedding_backend="onnx"))


def test_onnx_vectors_are_torch_fp32_vectors(onnx_embedder, sample_index):
    fp32 = parts.embedder(Settings(model=MODEL, embedding_backend="torch"))
    questions = (onnx_embedder.encode_queries(QUESTIONS) * fp32.encode_queries(QUESTIONS)).sum(axis=1)
    passages = sample_passages(sample_index[0])
    cosines = (onnx_embedder.encode_passages(passages) * fp32.encode_passages(passages)).sum(axis=1)
    assert questions.min() >= 0.9999 and cosines.min() >= 0.9999, (questions.min(), cosines.min())
    assert onnx_embedder.count_tokens(passages) == fp32.count_tokens(passages)
    assert np.allclose(np.linalg.norm(onnx_embedder.encode_queries(QUESTIONS), axis=1), 1, atol=1e-5)


def test_an_index_built_with_torch_serves_the_same_passages_on_onnx(onnx_embedder, engine, sample_index):
    on_onnx = Engine(Settings(index=sample_index[0], model=MODEL, embedding_backend="onnx"), onnx_embedder)
    try:
        for question in QUESTIONS:
            ours = [c.passage for c in on_onnx.ask(question).citations]
            theirs = [c.passage for c in engine.ask(question).citations]
            assert ours == theirs, question
    finally:
        on_onnx.close()


def test_rag_serve_embeds_with_onnx_on_a_cpu_unless_told_otherwise():
    assert serving_settings(Settings(model=MODEL)).embedding_backend == "onnx"
    assert serving_settings(Settings(model=MODEL, embedding_backend="torch")).embedding_backend == "torch"
    assert serving_settings(Settings(model="no-such-folder")).embedding_backend == "auto"  # a hub name: torch


def test_onnx_int8_embeds_passages_near_fp32_and_questions_exactly_as_fp32(onnx_embedder, sample_index):
    int8 = parts.embedder(Settings(model=MODEL, embedding_backend="onnx-int8"))
    passages = sample_passages(sample_index[0])
    cosines = (int8.encode_passages(passages) * onnx_embedder.encode_passages(passages)).sum(axis=1)
    assert cosines.mean() >= 0.99 and cosines.min() >= 0.98, (cosines.mean(), cosines.min())
    assert np.array_equal(int8.encode_queries(QUESTIONS), onnx_embedder.encode_queries(QUESTIONS))
    assert vector_space("onnx-int8") == vector_space("torch")
