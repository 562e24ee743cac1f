"""Settings to parts: one path, defaults once, generators' own settings, unknown names refused."""

from __future__ import annotations

import pytest

from rag import parts
from rag.errors import InvalidSetting
from rag.generators import settings_classes
from rag.settings import Settings


def test_each_part_gets_its_config_from_the_one_settings_object(tmp_path):
    settings = Settings(index=tmp_path, chunk_max_chars=700, dense_weight=0.4, fusion="rrf", rrf_k=30, bm25_k1=1.2)
    assert parts.chunker_config(settings).max_chars == 700
    config = parts.retrieval_config(settings)
    assert (config.dense_weight, config.fusion.value, config.rrf_k) == (0.4, "rrf", 30)
    assert parts.store(settings).config.bm25_k1 == 1.2


@pytest.mark.parametrize("setting, value, message", [
    ("retriever", "sparse", "unknown retriever 'sparse'; choose one of: hybrid, dense, bm25"),
    ("fusion", "sum", "unknown fusion 'sum'; choose one of: convex, rrf"),
])
def test_unknown_names_are_one_line_errors(setting, value, message):
    with pytest.raises(InvalidSetting, match=message):
        parts.retrieval_config(Settings(**{setting: value}))


def test_an_unknown_store_is_refused(tmp_path):
    with pytest.raises(InvalidSetting, match="unknown index store 'cluster'; available: folder"):
        parts.store(Settings(store="cluster"))


def test_generators_declare_their_own_settings_beside_their_code():
    classes = settings_classes()
    assert {"extractive", "openai"} <= set(classes)
    assert classes["openai"].model_config["env_prefix"] == "RAG_LLM_"
    assert "llm_base_url" not in Settings.model_fields  # not the core's to know


def test_a_generator_reads_its_prefixed_keywords_and_its_environment(monkeypatch):
    monkeypatch.setenv("RAG_EXTRACTIVE_PASSAGES", "3")
    generator = parts.generator(parts.checked(Settings(extractive_max_sentences=1)), "extractive", embedder=None)
    assert (generator.config.max_sentences, generator.config.passages) == (1, 3)


def test_a_misspelt_or_invalid_generator_setting_is_refused():
    with pytest.raises(InvalidSetting, match="unknown setting\\(s\\): llm_bse_url"):
        parts.checked(Settings(llm_bse_url="http://127.0.0.1:9/v1"))
    with pytest.raises(InvalidSetting, match="RAG_LLM_TIMEOUT"):
        parts.generator(Settings(llm_base_url="http://127.0.0.1:9/v1", llm_timeout=-1), "openai", embedder=None)


def test_rag_serve_embeds_with_one_torch_thread_unless_told_otherwise():
    import torch

    from rag.service.launcher import serving_settings

    assert serving_settings(Settings()).torch_threads == 1 and Settings().torch_threads is None
    assert serving_settings(Settings(torch_threads=2)).torch_threads == 2
    before = torch.get_num_threads()
    try:
        parts.embedder(Settings(torch_threads=1, embedding_backend="torch"))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
