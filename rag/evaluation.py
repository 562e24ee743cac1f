"""Offline evaluation: retrieval and answer quality on SQuAD-format sets and the project's JSON Lines.

SQuAD sets are indexed once (one paragraph per document, title kept) into a cache keyed by the data
and the model; the JSON Lines questions run against an index of the corpus they were written for.
"""

from __future__ import annotations

import hashlib
import json
import re
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rag import parts
from rag.answer import MARKER
from rag.chunking import split_sentences
from rag.datasets import EvalQuestion, detect_format, load_jsonl, load_squad
from rag.embeddings import resolve_backend
from rag.engine import AskOptions, Engine, Turn
from rag.errors import IndexMismatch, IndexNotBuilt
from rag.index import build_index
from rag.index.folder import DENSE_STORAGE
from rag.index.manifest import BM25_DOCUMENTS
from rag.japanese import normalize, speaks_to_reader
from rag.retrieval import Mode
from rag.settings import Settings
from rag.types import Answer

KS = (1, 5, 10)
# One SQuAD paragraph is one document: no merging or splitting below the model's token limit.
SQUAD_CHUNKER = dict(min_chars=0, target_chars=100_000, max_chars=100_000)


# Spellings of one answer that NFKC keeps apart: the wave dash 〜 (NFKC folds only the full-width ～ to ~)
# and the counter ヶ written カ, ケ, か or 箇 (1～2ヶ月 = 1〜2カ月, 3か国 = 3ヶ国).
WAVE_DASH = str.maketrans({"〜": "~"})
COUNTER_KE = re.compile(r"(?<=\d)[カケか箇](?=[月所国年条])")


def squash(text: str) -> str:
    """Normalised for answer matching: NFKC, lower case, no whitespace, one spelling of 〜 and ヶ."""
    return COUNTER_KE.sub("ヶ", "".join(normalize(text).split()).translate(WAVE_DASH))


def contains_any(text: str, answers: tuple[str, ...]) -> bool:
    haystack = squash(text)
    return any(squash(a) in haystack for a in answers if a)


def char_f1(prediction: str, gold: str) -> float:
    """Character-level F1 of the squashed strings (the JSQuAD measure for Japanese spans)."""
    predicted, expected = Counter(squash(prediction)), Counter(squash(gold))
    common = sum((predicted & expected).values())
    if not common:
        return 0.0
    precision, recall = common / sum(predicted.values()), common / sum(expected.values())
    return 2 * precision * recall / (precision + recall)


def distinct_articles(ids: list[str]) -> list[str]:
    return list(dict.fromkeys(ids))


def answer_articles(answer: Answer) -> list[str]:
    """Articles in the order a reader meets them: citations first, then related."""
    return distinct_articles([c.article_id for c in answer.citations] + [r.article_id for r in answer.related])


def answer_sentences(answer: Answer) -> list[str]:
    text = MARKER.sub("", answer.answer)
    return [text[start:end] for start, end in split_sentences(text)]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


@dataclass
class ModeReport:
    mode: str
    questions: int = 0
    recall: dict[int, float] = field(default_factory=dict)  # article (paragraph) hit@k
    mrr10: float = 0.0
    passage_contains_answer5: float | None = None
    answer_contains_gold: float = 0.0
    keyphrase_coverage: float | None = None
    answer_hit1: float | None = None  # first article of the answer is gold
    answer_hit5: float | None = None
    mean_answer_chars: float = 0.0
    short_exact: float | None = None  # factoid: the short answer equals a gold answer
    short_f1: float | None = None  # factoid: best character F1 of the short answer against the gold answers
    chatter_sentences: int = 0  # answer sentences that ask the reader something or talk to them (should be 0)
    abstention_rate: float = 0.0
    abstention_precision: float | None = None
    abstention_recall: float | None = None
    wrong_abstention_rate: float | None = None
    latency_p50_ms: float = 0.0
    latency_p95_ms: float = 0.0


@dataclass
class Outcome:
    question: EvalQuestion
    ranked_articles: list[str]
    passages: list[str]
    answer: Answer
    ms: float


def ensure_squad_index(path: Path, settings: Settings, cache: Path, progress: Callable[[str], None]) -> Settings:
    """Index the SQuAD paragraphs once per (data, model, backend); the settings that open that index.

    Later runs reuse it; other BM25 settings only rebuild BM25 (the vectors are reused).
    """
    loaded, _ = load_squad(path)
    key = hashlib.sha1()
    for article in loaded.articles:
        key.update(article.body.encode("utf-8"))
    backend = resolve_backend(settings.embedding_backend, settings.embedding_device, settings.model)
    key.update(f"{settings.model}|{backend}|{SQUAD_CHUNKER}|{DENSE_STORAGE}".encode())
    squad = settings.model_copy(update={
        "index": cache / f"{path.stem}-{key.hexdigest()[:10]}", "store": "folder",
        **{f"chunk_{name}": value for name, value in SQUAD_CHUNKER.items()}})
    try:
        manifest = parts.store(squad).manifest()
        manifest.check(str(squad.index))
        if manifest.has_vectors and (manifest.bm25.k1, manifest.bm25.b, manifest.bm25.documents) == (
                settings.bm25_k1, settings.bm25_b, BM25_DOCUMENTS):
            return squad
    except (IndexNotBuilt, IndexMismatch):  # not built yet, or BM25 terms of an older analysis
        pass
    progress(f"indexing {len(loaded.articles)} paragraphs of {path} into {squad.index} (once; cached)")
    build_index(loaded, parts.store(squad), parts.embedder(squad), parts.chunker_config(squad),
                parts.build_config(squad), source={"dataset": str(path)})
    return squad


def run_questions(engine: Engine, questions: list[EvalQuestion], modes: list[Mode], depth: int,
                  tick: Callable[[], None] | None = None) -> dict[Mode, list[Outcome]]:
    """Ask every question in every mode; the query is embedded once and shared by the modes.

    Retrieval metrics read the top `depth` passages; the answer is composed from the top `settings.k`.
    A conversation's earlier questions are asked first, in the same mode, and their answers become the
    history of the question measured.
    """
    outcomes: dict[Mode, list[Outcome]] = {m: [] for m in modes}
    k = engine.settings.k
    depth = max(depth, k)
    for q in questions:
        vector = None
        for mode in modes:
            history = conversation(engine, q.earlier, mode)
            started = time.perf_counter()
            analysed = engine.analyse(q.question, history)
            if vector is None and mode is not Mode.BM25:
                vector = engine.embedder.encode_queries([analysed.query.text])[0]
            analysed, result = engine.search(analysed, AskOptions(k=depth, mode=mode), vector)
            ranked = distinct_articles([h.article.article_id for h in result.hits[:depth]])
            answer = engine.answer(analysed, result)
            ms = (time.perf_counter() - started) * 1000
            outcomes[mode].append(Outcome(q, ranked, [h.chunk.text for h in result.hits[:k]], answer, ms))
        if tick:
            tick()
    return outcomes


def conversation(engine: Engine, earlier: tuple[str, ...], mode: Mode) -> tuple[Turn, ...]:
    """The turns a reader would have seen: each earlier question with the answer it got."""
    history: tuple[Turn, ...] = ()
    for question in earlier:
        answer = engine.ask(question, AskOptions(mode=mode, history=history))
        cited = tuple(distinct_articles([c.article_id for c in answer.citations]))
        history += (Turn("user", question), Turn("assistant", answer.answer, cited))
    return history


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 4) if values else None


def summarize(mode: Mode, outcomes: list[Outcome]) -> ModeReport:
    report = ModeReport(mode.value, questions=len(outcomes))
    answerable = [o for o in outcomes if o.question.kind != "unanswerable"]
    unanswerable = [o for o in outcomes if o.question.kind == "unanswerable"]
    for k in KS:
        report.recall[k] = _mean([float(bool(set(o.ranked_articles[:k]) & set(o.question.gold))) for o in answerable]) or 0.0
    report.mrr10 = _mean([next((1 / r for r, a in enumerate(o.ranked_articles[:10], 1) if a in o.question.gold), 0.0)
                          for o in answerable]) or 0.0
    report.passage_contains_answer5 = _mean([float(any(contains_any(p, o.question.answers) for p in o.passages[:5]))
                                             for o in answerable if o.question.answers])
    factoid = [o for o in answerable if o.question.kind == "factoid"]
    report.answer_contains_gold = _mean([float(contains_any(o.answer.answer, o.question.answers)) for o in factoid]) or 0.0
    shorts = [(o.answer.short_answer.text if o.answer.short_answer else "", o.question.answers)
              for o in factoid if o.question.answers]
    report.short_exact = _mean([float(any(squash(text) == squash(a) for a in golds)) if text else 0.0
                                for text, golds in shorts])
    report.short_f1 = _mean([max(char_f1(text, a) for a in golds) if text else 0.0 for text, golds in shorts])
    descriptive = [o for o in answerable if o.question.kind == "descriptive"]
    report.keyphrase_coverage = _mean([
        sum(contains_any(o.answer.answer, (a,)) for a in o.question.answers) / len(o.question.answers)
        for o in descriptive if o.question.answers])
    report.answer_hit1 = _mean([float(answer_articles(o.answer)[:1] != [] and answer_articles(o.answer)[0] in o.question.gold)
                                for o in answerable])
    report.answer_hit5 = _mean([float(bool(set(answer_articles(o.answer)[:5]) & set(o.question.gold))) for o in answerable])
    answered = [o for o in outcomes if not o.answer.abstained]
    report.mean_answer_chars = _mean([len(o.answer.answer) for o in answered]) or 0.0
    report.chatter_sentences = sum(speaks_to_reader(sentence) for o in answered for sentence in answer_sentences(o.answer))
    report.abstention_rate = _mean([float(o.answer.abstained) for o in outcomes]) or 0.0
    if unanswerable:
        abstained = [o for o in outcomes if o.answer.abstained]
        report.abstention_recall = _mean([float(o.answer.abstained) for o in unanswerable])
        report.abstention_precision = (round(sum(o.question.kind == "unanswerable" for o in abstained) / len(abstained), 4)
                                       if abstained else None)
        report.wrong_abstention_rate = _mean([float(o.answer.abstained) for o in answerable])
    latencies = [o.ms for o in outcomes]
    report.latency_p50_ms, report.latency_p95_ms = round(percentile(latencies, 0.5), 1), round(percentile(latencies, 0.95), 1)
    return report


def misses(outcomes: list[Outcome]) -> list[dict]:
    """Per-question records of what went wrong, for error analysis."""
    rows = []
    for o in outcomes:
        q = o.question
        problems = []
        if q.kind == "unanswerable":
            if not o.answer.abstained:
                problems.append("answered an unanswerable question")
        else:
            if not set(o.ranked_articles[:1]) & set(q.gold):
                problems.append("gold not at rank 1")
            if q.kind == "factoid" and q.answers and not contains_any(o.answer.answer, q.answers):
                problems.append("answer lacks the gold string")
            if o.answer.abstained:
                problems.append("abstained")
        if problems:
            rows.append({"id": q.qid, "question": q.question, "kind": q.kind, "problems": problems,
                         "gold": list(q.gold)[:5], "answers": list(q.answers), "retrieved": o.ranked_articles[:5],
                         "answer": o.answer.answer})
    return rows


COLUMNS = [  # (header, getter) for the comparison table
    ("retriever", lambda r: r.mode),
    ("R@1", lambda r: r.recall.get(1)),
    ("R@5", lambda r: r.recall.get(5)),
    ("R@10", lambda r: r.recall.get(10)),
    ("MRR@10", lambda r: r.mrr10),
    ("pass∋ans@5", lambda r: r.passage_contains_answer5),
    ("ans∋gold", lambda r: r.answer_contains_gold),
    ("short EM", lambda r: r.short_exact),
    ("short F1", lambda r: r.short_f1),
    ("keyphr", lambda r: r.keyphrase_coverage),
    ("ans hit@1", lambda r: r.answer_hit1),
    ("ans hit@5", lambda r: r.answer_hit5),
    ("abst", lambda r: r.abstention_rate),
    ("abst P", lambda r: r.abstention_precision),
    ("abst R", lambda r: r.abstention_recall),
    ("wrong abst", lambda r: r.wrong_abstention_rate),
    ("ans chars", lambda r: r.mean_answer_chars),
    ("chatter", lambda r: r.chatter_sentences),
    ("p50 ms", lambda r: r.latency_p50_ms),
    ("p95 ms", lambda r: r.latency_p95_ms),
]


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if value <= 1.0 else f"{value:.1f}"
    return str(value)


def markdown_table(reports: list[ModeReport]) -> str:
    columns = [(h, g) for h, g in COLUMNS if any(g(r) is not None for r in reports)]
    lines = ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(g(r)) for _, g in columns) + " |" for r in reports]
    return "\n".join(lines)


def plot_recall(reports: list[ModeReport], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for r in reports:
        ax.plot(list(KS), [r.recall[k] for k in KS], marker="o", label=r.mode)
    ax.set_xlabel("k")
    ax.set_ylabel("recall@k (gold document retrieved)")
    ax.set_xticks(list(KS))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_reports(reports: list[ModeReport], outcomes: dict[Mode, list[Outcome]], out: Path, meta: dict) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(reports)
    files = [out / "report.json", out / "report.md", out / "recall_at_k.png", out / "misses.jsonl"]
    files[0].write_text(json.dumps({"meta": meta, "results": [asdict(r) for r in reports]}, ensure_ascii=False,
                                   indent=2), encoding="utf-8")
    files[1].write_text(f"# Evaluation: {meta['dataset']}\n\n" + "\n".join(f"- {k}: {v}" for k, v in meta.items())
                        + "\n\n" + table + "\n", encoding="utf-8")
    plot_recall(reports, files[2], Path(meta["dataset"]).name)
    with files[3].open("w", encoding="utf-8") as handle:
        for mode, rows in outcomes.items():
            for row in misses(rows):
                handle.write(json.dumps({"retriever": mode.value, **row}, ensure_ascii=False) + "\n")
    return files


def sample(questions: list[EvalQuestion], limit: int | None) -> list[EvalQuestion]:
    """A deterministic subset spread over the whole set (SQuAD files group questions by article)."""
    if not limit or limit >= len(questions):
        return questions
    step = len(questions) / limit
    return [questions[int(i * step)] for i in range(limit)]


def evaluate(dataset: Path, settings: Settings, *, fmt: str | None, modes: list[Mode], depth: int,
             limit: int | None, out: Path, progress: Callable[[str], None],
             tick_factory: Callable[[int], Callable[[], None]] | None = None) -> tuple[list[ModeReport], list[Path]]:
    fmt = fmt or detect_format(dataset)
    if fmt == "squad":
        settings = ensure_squad_index(dataset, settings, settings.cache / "eval", progress)
        questions = load_squad(dataset)[1]
    else:
        questions = load_jsonl(dataset)
    questions = sample(questions, limit)
    engine = Engine(settings)
    try:
        tick = tick_factory(len(questions)) if tick_factory else None
        outcomes = run_questions(engine, questions, modes, depth, tick)
    finally:
        engine.close()
    reports = [summarize(mode, rows) for mode, rows in outcomes.items()]
    meta = {"dataset": str(dataset), "format": fmt, "questions": len(questions), "index": str(settings.index),
            "model": engine.embedder.model_id, "backend": engine.embedder.backend, "answer_k": settings.k,
            "fusion": settings.fusion, "dense_weight": settings.dense_weight, "abstain_below": settings.abstain_below}
    return reports, write_reports(reports, outcomes, out, meta)
