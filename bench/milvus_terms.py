"""Which way keeps Milvus's BM25 equal to the folder store's: Milvus's BM25 function over our pre-analysed terms,
or our own sparse vectors (what rag/index/milvus.py does)? Needs a running `milvus-lite server`.

    python bench/milvus_terms.py --uri http://127.0.0.1:19530

Builds the sample corpus (a copy) into the folder store and the Milvus store, copies the Milvus store's rows
into a collection that scores the same hashed terms with Milvus's BM25 function, flushes both (the rows move
from the memtable into a segment, as they do by themselves as rows accumulate), and compares the BM25 top 5 of
the corpus's 30 questions against the folder store's; then changes one article, updates all three the way
`rag index` does (upserts and deletes of the changed rows), and compares again.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import tempfile
from contextlib import closing
from pathlib import Path

from rag import parts
from rag.engine import Engine
from rag.index import build_index
from rag.retrieval import Mode
from rag.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SITE = dict(site_url="https://example.com", permalink="/:year/:month/:day/:title/")


def term_token(term: str) -> str:
    """A term as an opaque token Milvus's `standard` analyser keeps whole: `w` + 16 hex digits of its SHA-1."""
    return "w" + hashlib.sha1(term.encode("utf-8")).hexdigest()[:16]


def questions() -> list[str]:
    return [line.split("|")[2].strip() for line in (ROOT / "corpus/QUESTIONS.md").read_text().splitlines()
            if line.startswith("| 20")]


def bm25_function_collection(client, name: str, k1: float, b: float) -> None:
    from pymilvus import DataType, Function, FunctionType

    if client.has_collection(name):
        client.drop_collection(name)
    schema = client.create_schema(auto_id=False)
    schema.add_field("text_id", DataType.INT64, is_primary=True)
    schema.add_field("terms", DataType.VARCHAR, max_length=65535, enable_analyzer=True,
                     analyzer_params={"type": "standard"})
    schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
    schema.add_function(Function(name="bm25", function_type=FunctionType.BM25, input_field_names=["terms"],
                                 output_field_names=["sparse"]))
    index = client.prepare_index_params()
    index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25",
                    params={"params": {"bm25_k1": k1, "bm25_b": b}})  # milvus-lite reads only the nested form
    client.create_collection(name, schema=schema, index_params=index)


def rows(client, texts: str) -> dict[int, str]:
    """text_id -> the passage's BM25 terms (title + passage, as the folder store analyses them) as tokens."""
    from rag.japanese import bm25_document_terms

    articles = texts.removesuffix("_texts") + "_articles"
    titles = {r["article_id"]: r["title"] for r in client.query(articles, filter='article_id != ""',
                                                                output_fields=["title"], limit=16384)}
    return {r["text_id"]: " ".join(term_token(t) for t in bm25_document_terms(titles[r["title_article"]] + "\n" +
                                                                               r["text"]))
            for r in client.query(texts, filter="text_id >= 0", output_fields=["text", "title_article"], limit=16384)}


def compare(label: str, folder: Engine, milvus: Engine, client, function_collection: str) -> None:
    same_ours = same_function = 0
    for q in questions():
        question = folder.analyse(q)
        want = [h.chunk.text for h in folder.retriever.search(question, 5, mode=Mode.BM25).hits]
        ours = [h.chunk.text for h in milvus.retriever.search(milvus.analyse(q), 5, mode=Mode.BM25).hits]
        hits = client.search(function_collection, data=[" ".join(term_token(t) for t in question.query.terms)],
                             anns_field="sparse", limit=5, search_params={"metric_type": "BM25"})[0]
        texts = {h.id for h in hits}
        by_id = {text_id: text for text_id, text in zip(*_ids_texts(milvus, texts))}
        function = [by_id[h.id] for h in hits]
        same_ours += ours == want
        same_function += function == want
    n = len(questions())
    print(f"{label}: same BM25 top 5 as the folder store: own sparse vectors {same_ours}/{n}, "
          f"BM25 function {same_function}/{n}")


def _ids_texts(engine: Engine, ids: set[int]) -> tuple[list[int], list[str]]:
    ids = sorted(ids)
    return ids, [engine.store.text_row(i)["text"] for i in ids]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uri", default="http://127.0.0.1:19530")
    args = parser.parse_args()
    from pymilvus import MilvusClient

    work = Path(tempfile.mkdtemp(prefix="milvus-terms-"))
    try:
        corpus = work / "corpus"
        shutil.copytree(ROOT / "corpus", corpus)
        base = dict(corpus=corpus, model=str(ROOT / "models/multilingual-e5-small"), **SITE)
        folder = Settings(index=work / "folder", **base)
        milvus = Settings(store="milvus", milvus_uri=args.uri, milvus_collection="terms_bench", **base)
        embedder = parts.embedder(folder)
        client = MilvusClient(uri=args.uri)
        function_collection = "terms_bench_function"

        def index_all(rebuild: bool) -> None:
            for settings in (folder, milvus):
                loaded = parts.corpus(settings)
                build_index(loaded, parts.store(settings), embedder, parts.chunker_config(settings),
                            parts.build_config(settings),
                            source=parts.corpus_source(settings, loaded), rebuild=rebuild)

        index_all(rebuild=True)
        ours = parts.open_store(milvus, embedder).texts
        bm25_function_collection(client, function_collection, milvus.bm25_k1, milvus.bm25_b)
        before = rows(client, ours)
        client.insert(function_collection, [{"text_id": i, "terms": t} for i, t in before.items()])
        client.load_collection(function_collection)
        for name in (ours, function_collection):  # as the server does by itself as rows accumulate
            client.flush(name)
        with closing(Engine(folder, embedder)) as f, closing(Engine(milvus, embedder)) as m:
            compare("after the build", f, m, client, function_collection)

        post = sorted((corpus / "_posts").glob("*.md"))[0]
        post.write_text(post.read_text(encoding="utf-8") + "\n\n将棋盤のマスの数について、追記の段落です。\n",
                        encoding="utf-8")
        index_all(rebuild=False)
        after = rows(client, ours)
        client.upsert(function_collection, [{"text_id": i, "terms": t} for i, t in after.items()
                                            if before.get(i) != t])
        gone = sorted(set(before) - set(after))
        if gone:
            client.delete(function_collection, ids=gone)
        with closing(Engine(folder, embedder)) as f, closing(Engine(milvus, embedder)) as m:
            compare("after one article changed", f, m, client, function_collection)
        client.drop_collection(function_collection)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
