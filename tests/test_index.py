"""Index build, incremental update, atomic swap and the model check, on real data with the real model."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from rag.cli import main as rag_main
from rag.embeddings import create_embedder
from rag.errors import IndexMismatch, IndexNotBuilt
from rag.index import FolderIndex, Manifest, live_generation
from rag.index.folder import CURRENT, MANIFEST
from rag.japanese import tokenize
from rag.model_install import install_model
from rag.question import query_for
from rag.settings import DEFAULT_MODEL_DIR
from rag.types import Filters
from tests.conftest import PROJECT_ROOT, build_sample_index as build


def read_manifest(index_dir: Path) -> Manifest:
    return Manifest.read(live_generation(index_dir) / MANIFEST)


@pytest.fixture()
def corpus_copy(sample_corpus, tmp_path) -> Path:
    target = tmp_path / "corpus"
    shutil.copytree(sample_corpus / "_posts", target)
    return target


def test_build_writes_all_parts_and_a_manifest(sample_index, sample_corpus, embedder):
    index_dir, report = sample_index
    assert report.articles == len(list((sample_corpus / "_posts").glob("*.md")))
    assert report.malformed == []
    # two sample articles share one paragraph: stored and embedded once
    assert report.duplicate_chunks >= 1
    assert report.embedded == report.distinct_texts == report.chunks - report.duplicate_chunks
    generation = live_generation(index_dir)
    assert {p.name for p in generation.iterdir()} == {"manifest.json", "chunks.sqlite", "dense.faiss", "terms"}
    manifest = read_manifest(index_dir)
    assert asdict(manifest.model) == {"id": embedder.model_id, "backend": embedder.backend, "dim": 384,
                                      "query_prompt": "query: ", "passage_prompt": "passage: "}
    assert manifest.chunker["max_tokens"] == 512
    assert len(manifest.files) == report.articles
    assert manifest.counts.chunks == report.chunks
    assert {"torch", "faiss-cpu", "scipy", "fugashi", "sentence-transformers"} <= set(manifest.versions)
    assert manifest.dense.storage == "float16"


def stored_vectors(index_dir: Path, embedder) -> dict[str, tuple[np.ndarray, str]]:
    """text hash -> (stored vector, text) of the live generation's passages (not the retired rows)."""
    index = FolderIndex.open(index_dir, embedder)
    try:
        rows = index.db.execute(
            "SELECT text_id, text_hash, text FROM texts WHERE n_articles > 0 ORDER BY text_id").fetchall()
        vectors = index.vectors()
        return {h: (vectors[row], text) for row, h, text in rows}
    finally:
        index.close()


def test_vectors_are_stored_in_float16_and_updates_keep_them_bit_for_bit(corpus_copy, tmp_path, embedder):
    index_dir = tmp_path / "index"
    build(corpus_copy, index_dir, embedder)
    before = stored_vectors(index_dir, embedder)
    sample = list(before.values())[:8]
    fresh = embedder.encode_passages([text for _, text in sample])
    for (stored, _), vector in zip(sample, fresh):
        assert np.array_equal(stored, stored.astype(np.float16).astype(np.float32))  # float16 values
        # the passage's own vector; onnx-int8 (auto on CPUs without bf16) quantises activations per batch, so
        # the same text embedded among other passages differs a little (cosine 0.9976 seen)
        assert float(stored @ vector) > 0.995
    edited = corpus_copy / "2025-01-15-fujisan.md"
    edited.write_text(edited.read_text(encoding="utf-8") + "\n富士山の追記です。新しい段落を加えました。\n",
                      encoding="utf-8")
    build(corpus_copy, index_dir, embedder)
    after = stored_vectors(index_dir, embedder)
    kept = before.keys() & after.keys()
    assert len(kept) >= len(before) - 2
    assert all(np.array_equal(before[h][0], after[h][0]) for h in kept), "reused vectors must not drift"


def test_index_finds_the_passage_by_dense_and_bm25(sample_index, embedder):
    index = FolderIndex.open(sample_index[0], embedder)
    try:
        question = "東京スカイツリーの高さは何メートル？"
        dense = index.dense_search(embedder.encode_queries([question])[0], 1, Filters())
        terms = index.term_search(query_for(question, tokenize(question)).terms, 1, Filters())
        for found in (dense, terms):
            chunk = index.passage(max(found, key=found.get), Filters()).chunk
            assert chunk.article_id == "2025-07-18-tokyo-skytree"
            article = index.article(chunk.article_id)
            assert article.body[chunk.char_start : chunk.char_end] == chunk.text
    finally:
        index.close()


def test_duplicate_text_is_remembered_for_every_article(sample_index):
    index = FolderIndex.open(sample_index[0])
    try:
        row = index.db.execute("SELECT text_id FROM texts WHERE n_articles > 1").fetchone()
        owners = {c.article_id for c in index.chunks_of_text(row["text_id"])}
        assert owners == {"2025-12-03-transformer-attention", "2026-03-10-ai-history-japan"}
    finally:
        index.close()


def test_incremental_update_embeds_only_changed_files(corpus_copy, tmp_path, embedder):
    index_dir = tmp_path / "index"
    first = build(corpus_copy, index_dir, embedder)

    edited = corpus_copy / "2025-01-15-fujisan.md"
    edited.write_text(edited.read_text(encoding="utf-8") + "\n富士山の追記です。新しい段落を加えました。\n",
                      encoding="utf-8")
    (corpus_copy / "2025-09-12-shogi-rules.md").unlink()
    second = build(corpus_copy, index_dir, embedder)

    assert second.files_changed == ["2025-01-15-fujisan.md"]
    assert second.files_deleted == ["2025-09-12-shogi-rules.md"]
    assert second.files_added == []
    assert 1 <= second.embedded <= 2, "only the edited file's changed passage is embedded again"
    assert second.reused == second.distinct_texts - second.embedded
    index = FolderIndex.open(index_dir, embedder)
    try:
        assert index.chunks_of_article("2025-09-12-shogi-rules") == []
        assert index.article("2025-09-12-shogi-rules") is None
        assert any("富士山の追記です" in c.text for c in index.chunks_of_article("2025-01-15-fujisan"))
        assert second.distinct_texts < first.distinct_texts
        # the deleted article's passages stay as retired rows, which no search returns
        retired = index.size - second.distinct_texts
        assert retired > 0 and index.manifest.counts.rows == index.size
        everything = index.dense_search(embedder.encode_queries(["将棋のルール"])[0], index.size, Filters())
        assert len(everything) == second.distinct_texts
        assert all(index.passage(t, Filters()).article.article_id != "2025-09-12-shogi-rules" for t in everything)
        shogi = index.term_search(["将棋"], index.size, Filters())
        assert all(index.passage(t, Filters()).article.article_id != "2025-09-12-shogi-rules" for t in shogi)
    finally:
        index.close()
    # a third run with nothing changed embeds nothing
    assert build(corpus_copy, index_dir, embedder).embedded == 0
    assert len(list(index_dir.glob("gen-*"))) == 2, "the live generation and its predecessor only"


def test_malformed_file_is_named_and_skipped(corpus_copy, tmp_path, embedder, capsys):
    (corpus_copy / "2025-12-31-broken.md").write_text("---\ntitle: [unclosed\ndate: 2025-12-31\n---\n本文。\n",
                                                      encoding="utf-8")
    code = rag_main(["index", "--corpus", str(corpus_copy), "--index", str(tmp_path / "i"), "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0
    assert "skipped 2025-12-31-broken.md:" in err
    assert "1 malformed files skipped" in out and "chunks/s" in out


def test_interrupted_build_leaves_the_previous_index_intact(corpus_copy, tmp_path, embedder):
    index_dir = tmp_path / "index"
    build(corpus_copy, index_dir, embedder)
    before = (index_dir / CURRENT).read_text()

    def interrupt(_):
        raise KeyboardInterrupt

    (corpus_copy / "2026-03-11-new.md").write_text(
        "---\ntitle: 新記事\ndate: 2026-03-11 09:00:00 +0900\n---\n新しい記事の本文です。\n", encoding="utf-8")
    with pytest.raises(KeyboardInterrupt):
        build(corpus_copy, index_dir, embedder, progress=interrupt)
    assert (index_dir / CURRENT).read_text() == before
    assert not list(index_dir.glob(".gen-*"))
    FolderIndex.open(index_dir, embedder).close()


@pytest.mark.slow
def test_opening_with_another_model_is_a_clear_error(sample_index, tmp_path_factory, embedder):
    other_dir = tmp_path_factory.mktemp("models") / "other-e5"
    install_model(other_dir)
    other = create_embedder("torch", str(other_dir), query_prompt="query: ", passage_prompt="passage: ")
    with pytest.raises(IndexMismatch, match="built with model multilingual-e5-small@.*configured model is other-e5"):
        FolderIndex.open(sample_index[0], other)
    no_prompt = create_embedder("torch", str(PROJECT_ROOT / DEFAULT_MODEL_DIR), query_prompt="", passage_prompt="")
    with pytest.raises(IndexMismatch, match="prompts"):
        FolderIndex.open(sample_index[0], no_prompt)


@pytest.mark.slow
def test_backends_of_one_vector_space_share_an_index_and_others_are_refused(sample_index, embedder):
    model = str(PROJECT_ROOT / DEFAULT_MODEL_DIR)
    kinds = {name: create_embedder(name, model, query_prompt="query: ", passage_prompt="passage: ")
             for name in ("torch", "torch-bf16", "torch-int8")}
    built_with = read_manifest(sample_index[0]).model.backend
    assert built_with == embedder.backend
    for name in ("torch", "torch-bf16"):  # bf16 autocast reproduces the fp32 vectors
        FolderIndex.open(sample_index[0], kinds[name]).close()
    with pytest.raises(IndexMismatch, match=f"built with embedding backend {built_with}.*torch-int8.*"
                                            f"RAG_EMBEDDING_BACKEND={built_with}"):
        FolderIndex.open(sample_index[0], kinds["torch-int8"])


def test_missing_index_and_missing_corpus_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(IndexNotBuilt, match="rag index"):
        FolderIndex.open(tmp_path / "nothing")
    code = rag_main(["index", "--corpus", str(tmp_path / "no-such-corpus"), "--index", str(tmp_path / "i")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("rag: error:") and err.count("\n") == 1 and "no-such-corpus" in err


def test_update_rechunks_an_unchanged_file_whose_cleaned_body_changed(corpus_copy, tmp_path, embedder):
    """A newer cleaner yields another body from the same file: its chunks must follow the new body."""
    import sqlite3

    index_dir = tmp_path / "index"
    build(corpus_copy, index_dir, embedder)
    store = live_generation(index_dir) / "chunks.sqlite"
    with sqlite3.connect(store) as db:  # as if an older cleaner had left a stray line at the top
        db.execute("UPDATE articles SET body = '古い前置き。' || char(10) || char(10) || body "
                   "WHERE article_id = '2025-01-15-fujisan'")
    manifest = live_generation(index_dir) / MANIFEST  # ... and the manifest names that older reader
    recorded = json.loads(manifest.read_text(encoding="utf-8"))
    recorded["source"]["reader"] = "an-older-reader"
    manifest.write_text(json.dumps(recorded), encoding="utf-8")
    report = build(corpus_copy, index_dir, embedder)
    assert report.files_changed == [] and report.embedded == 0
    index = FolderIndex.open(index_dir, embedder)
    try:
        article = index.article("2025-01-15-fujisan")
        assert not article.body.startswith("古い前置き")
        for chunk in index.chunks_of_article("2025-01-15-fujisan"):
            assert article.body[chunk.char_start : chunk.char_end] == chunk.text
    finally:
        index.close()


def test_bm25_terms_meet_at_dictionary_forms_and_keep_compound_pairs():
    from rag.japanese import bm25_document_terms

    assert tokenize("作られた") == tokenize("作った") == tokenize("作ります") == ["作る"]
    terms = bm25_document_terms("東京スカイツリーは電波塔です")
    assert {"東京", "スカイ", "ツリー", "東京スカイ", "スカイツリー", "ツリー電波"} <= set(terms)
    question = "東京スカイツリーの高さは何メートル？"
    query = query_for(question, tokenize(question)).terms
    assert "スカイツリー" in query and "高い" in query  # 高さ is 高い + さ
    assert not any("何" in t for t in query)  # question words neither stand alone nor pair up


def test_an_index_of_another_bm25_analysis_must_be_rebuilt(sample_index, embedder, tmp_path):
    import json

    copy = tmp_path / "old"
    shutil.copytree(sample_index[0], copy)
    manifest_path = live_generation(copy) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["bm25"]["tokenizer"] = "fugashi + unidic-lite, NFKC + lower-cased surface forms"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(IndexMismatch, match="another analysis.*run `rag index` to rebuild it"):
        FolderIndex.open(copy, embedder)
    FolderIndex.open(copy, embedder, searching=False).close()  # an update may read it: it rewrites the terms


def test_articles_keep_their_image_and_an_older_generation_reads_without_one(sample_index, embedder, tmp_path):
    import sqlite3

    index = FolderIndex.open(sample_index[0], embedder)
    assert index.article("2025-07-18-tokyo-skytree").image == "/assets/images/posts/2025-07-18-tokyo-skytree-ogp.png"
    assert index.article("2025-01-15-fujisan").image == ""
    index.close()
    copy = tmp_path / "old"  # a generation written before images were kept
    shutil.copytree(sample_index[0], copy)
    with sqlite3.connect(live_generation(copy) / "chunks.sqlite") as db:
        db.execute("ALTER TABLE articles DROP COLUMN image")
    index = FolderIndex.open(copy, embedder)
    assert index.article("2025-07-18-tokyo-skytree").image == ""
    index.close()


def test_a_writer_keeps_the_articles_it_is_not_given(corpus_copy, tmp_path, embedder):
    """Writes are by article: deleting one file's article leaves every other article and its vectors."""
    import time

    from rag.index import FolderConfig, FolderStore
    from rag.index.store import Description

    index_dir = tmp_path / "index"
    first = build(corpus_copy, index_dir, embedder)
    before, vectors = read_manifest(index_dir), stored_vectors(index_dir, embedder)
    writer = FolderStore(FolderConfig(index_dir, 0.9, 0.4)).writer(embedder, rebuild=False)
    try:
        writer.delete("2025-09-12-shogi-rules.md")
        manifest = writer.commit(Description(embedder, before.chunker, before.source, 0, time.perf_counter(), 0, 0, 0))
    finally:
        writer.close()
    assert manifest.counts.articles == first.articles - 1 and "2025-09-12-shogi-rules.md" not in manifest.files
    index = FolderIndex.open(index_dir, embedder)
    try:
        assert index.article("2025-09-12-shogi-rules") is None
        assert [c.text for c in index.chunks_of_article("2025-01-15-fujisan")]
    finally:
        index.close()
    after = stored_vectors(index_dir, embedder)
    assert after and after.keys() < vectors.keys()
    assert all(np.array_equal(after[h][0], vectors[h][0]) for h in after)


def test_retention_follows_current_not_names(corpus_copy, tmp_path, embedder):
    """Generations whose names sort later (a clock that went back, an index copied from a machine whose clock
    ran ahead) must not get the new live generation deleted: CURRENT and its predecessor are kept."""
    index_dir = tmp_path / "index"
    build(corpus_copy, index_dir, embedder)
    live = (index_dir / CURRENT).read_text().strip()
    for future in ("gen-20990101T000000000000Z", "gen-20990102T000000000000Z"):
        shutil.copytree(index_dir / live, index_dir / future)
    (index_dir / CURRENT).write_text("gen-20990102T000000000000Z\n")
    shutil.rmtree(index_dir / live)
    posts = sorted(corpus_copy.glob("*.md"))  # each build below has a change to write (a file deleted)

    posts[0].unlink()
    second = build(corpus_copy, index_dir, embedder)
    assert second.embedded == 0, "the future generation's vectors are reused"
    assert {p.name for p in index_dir.glob("gen-*")} == {second.generation, "gen-20990102T000000000000Z"}
    assert (index_dir / CURRENT).read_text().strip() == second.generation
    posts[1].unlink()
    third = build(corpus_copy, index_dir, embedder)
    assert third.embedded == 0
    assert {p.name for p in index_dir.glob("gen-*")} == {third.generation, second.generation}
    FolderIndex.open(index_dir, embedder).close()


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


DAMAGES = {  # what is damaged -> (how, the file the message names)
    "truncated dense.faiss": (lambda gen: truncate(gen / "dense.faiss"), "dense.faiss cannot be read"),
    "truncated chunks.sqlite": (lambda gen: truncate(gen / "chunks.sqlite"), "chunks.sqlite cannot be read"),
    "truncated term counts": (lambda gen: truncate(gen / "terms" / "term_ids.npy"), "terms/ cannot be read"),
    "emptied term vocabulary": (lambda gen: (gen / "terms" / "vocab.txt").write_text(""), "terms/ cannot be read"),
    "broken manifest.json": (lambda gen: (gen / "manifest.json").write_text('{"format_version": 1, "mod'),
                             "manifest.json cannot be read"),
    "manifest of another build": (
        lambda gen: (gen / "manifest.json").write_text((gen / "manifest.json").read_text().replace(
            '"rows": ', '"rows": 1')), "dense.faiss cannot be read"),
    "CURRENT names a missing generation": (lambda gen: shutil.rmtree(gen), "which is missing or incomplete"),
    "CURRENT names a path": (lambda gen: (gen.parent / CURRENT).write_text("../elsewhere\n"),
                             "does not name a generation"),
}


def damaged_copy(sample_index, tmp_path, damage: str) -> tuple[Path, str]:
    index_dir = tmp_path / "damaged"
    shutil.copytree(sample_index[0], index_dir)
    how, names = DAMAGES[damage]
    how(live_generation(index_dir))
    return index_dir, names


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_index_is_one_line_naming_the_file_and_the_rebuild(sample_index, tmp_path, embedder, damage):
    from rag.errors import IndexDamaged

    index_dir, names = damaged_copy(sample_index, tmp_path, damage)
    with pytest.raises(IndexDamaged) as raised:
        FolderIndex.open(index_dir, embedder)
    message = raised.value.message
    assert names in message and message.endswith("rebuild the index with `rag index --rebuild`")
    assert "\n" not in message and str(tmp_path) not in message and ".cpp" not in message


def test_rag_ask_and_rag_index_on_a_damaged_index(sample_index, sample_corpus, tmp_path, capsys):
    index_dir, _ = damaged_copy(sample_index, tmp_path, "truncated dense.faiss")
    assert rag_main(["ask", "富士山の標高は？", "--index", str(index_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rag: error: index generation gen-") and err.count("\n") == 1
    assert "dense.faiss cannot be read (truncated or corrupt): rebuild the index with `rag index --rebuild`" in err
    assert rag_main(["index", "--corpus", str(sample_corpus), "--index", str(index_dir), "-q"]) == 2
    assert "rag index --rebuild" in capsys.readouterr().err


def test_a_full_disk_while_writing_is_one_line_and_the_live_index_stays(corpus_copy, tmp_path, embedder):
    """A real write failure: the process's file-size limit (RLIMIT_FSIZE) stops the new generation's files
    as a full disk would; the build says so in one line, removes its staging folder, and keeps CURRENT."""
    import resource
    import signal

    from rag.errors import IndexWriteFailed

    index_dir = tmp_path / "index"
    build(corpus_copy, index_dir, embedder)
    before = (index_dir / CURRENT).read_text()
    (corpus_copy / "2026-03-11-new.md").write_text(
        "---\ntitle: 新記事\ndate: 2026-03-11 09:00:00 +0900\n---\n新しい記事の本文です。\n", encoding="utf-8")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (32 * 1024, hard))
        with pytest.raises(IndexWriteFailed) as raised:
            build(corpus_copy, index_dir, embedder)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous_handler)
    assert raised.value.message.startswith("could not write the new index generation (")
    assert raised.value.message.endswith("): the live index is unchanged; free disk space and run `rag index` again")
    assert (index_dir / CURRENT).read_text() == before and not list(index_dir.glob(".gen-*"))
    FolderIndex.open(index_dir, embedder).close()
    assert build(corpus_copy, index_dir, embedder).files_added == ["2026-03-11-new.md"]


def test_a_second_build_is_refused_before_its_model_loads(sample_corpus, tmp_path, capsys):
    """The build lock comes first: with the lock held, `rag index` is refused even though its model (a missing
    folder here) could not even load, which would otherwise be the error it reports."""
    from rag.index import FolderConfig, FolderStore

    index_dir = tmp_path / "index"
    with FolderStore(FolderConfig(index_dir, 0.9, 0.4)).lock():
        code = rag_main(["index", "--corpus", str(sample_corpus), "--index", str(index_dir),
                         "--model", str(tmp_path / "no-model"), "-q"])
    assert code == 2
    assert capsys.readouterr().err == f"rag: error: another `rag index` is already building {index_dir}\n"


def test_the_embedding_device_falls_back_to_the_cpu_and_cuda_without_a_gpu_is_one_line(tmp_path, capsys):
    from rag.embeddings import EXPORTED_GRAPH_BACKENDS, cpu_auto_backend, cpu_flags, cuda_available, resolve_backend

    if cuda_available():
        pytest.skip("this machine has a CUDA GPU: the CPU fallback is not what runs here")
    chosen = cpu_auto_backend(cpu_flags())
    assert resolve_backend("auto", "auto", str(PROJECT_ROOT / DEFAULT_MODEL_DIR)) == chosen
    # ONNX Runtime and OpenVINO run the graph exported from a model folder
    assert resolve_backend("auto", "auto", "intfloat/a-hub-name") == (
        "torch" if chosen in EXPORTED_GRAPH_BACKENDS else chosen)
    assert [cpu_auto_backend(flags) for flags in ({"avx2", "avx512f", "avx512_bf16", "amx_bf16"},
                                                  {"avx2", "avx512f", "avx512_vnni", "avx512_bf16"},
                                                  {"avx2", "avx512f", "avx512_vnni"}, {"avx2"})] == [
        "torch-bf16", "openvino-bf16", "openvino", "onnx-int8"]
    assert resolve_backend("torch-int8", "cpu") == "torch-int8"
    for env, says in (({"RAG_EMBEDDING_DEVICE": "cuda"}, "torch sees no CUDA GPU"),
                      ({"RAG_EMBEDDING_DEVICE": "tpu"}, "unknown embedding device 'tpu'"),
                      ({"RAG_EMBEDDING_DEVICE": "cuda", "RAG_EMBEDDING_BACKEND": "torch-int8"}, "runs on the CPU")):
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            code = rag_main(["index", "--corpus", str(PROJECT_ROOT / "corpus"), "--index", str(tmp_path / "i")])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("rag: error:") and err.count("\n") == 1 and says in err, err
    assert not (tmp_path / "i" / "CURRENT").exists()


def test_an_update_analyses_only_new_passages_and_ranks_as_a_fresh_build(corpus_copy, tmp_path, embedder,
                                                                          monkeypatch):
    import rag.index.folder as folder

    index_dir = tmp_path / "index"
    build(corpus_copy, index_dir, embedder)
    post = sorted(corpus_copy.glob("*.md"))[0]
    post.write_text(post.read_text(encoding="utf-8") + "\n\n富士山の追記です。山頂には郵便局があります。\n",
                    encoding="utf-8")
    analysed = []

    def counted(text):
        analysed.append(text)
        return tokenize(text)

    monkeypatch.setattr(folder, "tokenize", counted)  # the real analysis, counted
    report = build(corpus_copy, index_dir, embedder)
    assert 1 <= len(analysed) <= report.embedded  # the changed article's new passages, nothing else
    monkeypatch.undo()
    fresh = tmp_path / "fresh"
    build(corpus_copy, fresh, embedder)
    question = "富士山の山頂に郵便局はある？"
    terms = query_for(question, tokenize(question)).terms
    updated, rebuilt = FolderIndex.open(index_dir), FolderIndex.open(fresh)

    def by_text(index: FolderIndex) -> dict[str, float]:  # an update appends rows: the same texts, other ids
        return {index.passage(t, Filters()).chunk.text: score for t, score in index.term_search(terms, 10, Filters()).items()}

    try:
        assert by_text(updated) == by_text(rebuilt)
    finally:
        updated.close()
        rebuilt.close()


def test_an_update_reads_only_changed_files_and_loads_the_model_only_to_embed(corpus_copy, tmp_path, monkeypatch,
                                                                               capsys):
    """`rag index` after one edit: the unchanged files are hashed, not parsed; with nothing to embed the model
    never loads, and a few new passages go to ONNX Runtime fp32 (the same vector space)."""
    import rag.corpus.jekyll as jekyll
    import rag.embeddings as embeddings

    index_dir = tmp_path / "index"
    args = ["index", "--corpus", str(corpus_copy), "--index", str(index_dir), "-q"]
    assert rag_main(args) == 0
    parsed, loaded = [], []
    real_parse, real_create = jekyll.load_article, embeddings.create_embedder
    monkeypatch.setattr(jekyll, "load_article", lambda path, *a, **kw: parsed.append(path.name) or real_parse(
        path, *a, **kw))
    monkeypatch.setattr(embeddings, "create_embedder", lambda backend, *a, **kw: loaded.append(backend) or real_create(
        backend, *a, **kw))
    capsys.readouterr()
    assert rag_main(args) == 0  # nothing changed
    assert parsed == [] and loaded == []
    assert "files      0 changed, 0 added, 0 deleted" in capsys.readouterr().out
    post = corpus_copy / "2025-01-15-fujisan.md"
    post.write_text(post.read_text(encoding="utf-8") + "\n\n富士山の山頂には郵便局があります。\n", encoding="utf-8")
    (corpus_copy / "2025-09-12-shogi-rules.md").unlink()
    assert rag_main(args) == 0
    assert parsed == ["2025-01-15-fujisan.md"] and loaded == ["onnx"]
    out = capsys.readouterr().out
    assert "files      1 changed, 0 added, 1 deleted" in out and "embedded   1 passages" in out
    index = FolderIndex.open(index_dir)
    try:
        assert any("郵便局" in c.text for c in index.chunks_of_article("2025-01-15-fujisan"))
        assert index.article("2025-09-12-shogi-rules") is None
        assert index.manifest.counts.articles == len(list(corpus_copy.glob("*.md")))
    finally:
        index.close()


def test_a_corpus_of_unreadable_files_is_one_line_and_leaves_the_index(corpus_copy, tmp_path, capsys):
    index_dir = tmp_path / "index"
    args = ["index", "--corpus", str(corpus_copy), "--index", str(index_dir), "-q"]
    assert rag_main(args) == 0
    live = live_generation(index_dir)
    for post in corpus_copy.glob("*.md"):
        post.write_bytes(b"\xff\xfe not UTF-8")
    capsys.readouterr()
    assert rag_main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("rag: error: none of the corpus's ") and err.count("\n") == 1, err
    assert "not UTF-8" in err and "the index is unchanged" in err
    assert live_generation(index_dir) == live
