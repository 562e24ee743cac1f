"""The OpenVINO embedding backends (`auto` on CPUs with AVX-512 and no AMX): the exported graph in f32 and bf16
gives torch fp32's vectors (cosine >= 0.9999, the real model), so their indexes answer as a torch-built one."""

from __future__ import annotations

import pytest

from rag.embeddings import create_embedder, vector_space
from rag.engine import Engine
from rag.settings import DEFAULT_MODEL_DIR, Settings
from tests.conftest import PROJECT_ROOT, build_sample_index
from tests.test_onnx import QUESTIONS, sample_passages

MODEL = str(PROJECT_ROOT / DEFAULT_MODEL_DIR)
PROMPTS = dict(query_prompt="query: ", passage_prompt="passage: ")


@pytest.fixture(scope="module")
def fp32():
    return create_embedder("torch", MODEL, **PROMPTS)


@pytest.mark.parametrize("backend", ["openvino", "openvino-bf16"])
def test_openvino_vectors_are_torch_fp32_vectors(backend, fp32, sample_index):
    embedder = create_embedder(backend, MODEL, **PROMPTS)
    passages = sample_passages(sample_index[0], 60)
    reported: list[int] = []
    vectors = embedder.encode_passages(passages, progress=reported.append)
    cosines = (vectors * fp32.encode_passages(passages)).sum(axis=1)  # row by row: the order is kept
    questions = (embedder.encode_queries(QUESTIONS) * fp32.encode_queries(QUESTIONS)).sum(axis=1)
    assert cosines.min() >= 0.9999 and questions.min() >= 0.9999, (cosines.min(), questions.min())
    assert sum(reported) == len(passages)
    assert embedder.count_tokens(passages) == fp32.count_tokens(passages)
    assert embedder.backend == backend and vector_space(backend) == vector_space("torch")


def test_an_index_built_with_openvino_bf16_answers_as_the_torch_built_one(engine, sample_corpus, tmp_path):
    index_dir = tmp_path / "openvino-index"
    build_sample_index(sample_corpus, index_dir, create_embedder("openvino-bf16", MODEL, **PROMPTS))
    built = Engine(Settings(index=index_dir, model=MODEL))
    try:
        for question in QUESTIONS:
            assert [c.passage for c in built.ask(question).citations] == \
                   [c.passage for c in engine.ask(question).citations], question
    finally:
        built.close()


def test_questions_embed_concurrently_as_one_by_one():
    from concurrent.futures import ThreadPoolExecutor

    embedder = create_embedder("openvino-bf16", MODEL, **PROMPTS)
    alone = embedder.encode_queries(QUESTIONS)
    with ThreadPoolExecutor(8) as pool:  # the service's request threads share one embedder
        together = list(pool.map(lambda q: embedder.encode_queries([q])[0], QUESTIONS * 8))
    assert all(float(v @ alone[i % len(QUESTIONS)]) >= 0.99999 for i, v in enumerate(together))
