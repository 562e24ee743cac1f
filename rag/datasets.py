"""Evaluation sets: SQuAD-format Japanese QA (JSQuAD, JaQuAD) and the project's JSON Lines questions."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from rag.corpus import CorpusLoad
from rag.errors import RagError
from rag.types import Article

UNDATED = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class EvalQuestion:
    qid: str
    question: str
    answers: tuple[str, ...]  # acceptable answer strings; empty when unanswerable
    gold: tuple[str, ...]  # article ids (SQuAD: the paragraph; jsonl: gold and alternative files)
    kind: str = "factoid"  # factoid | descriptive | unanswerable
    earlier: tuple[str, ...] = ()  # a conversation's earlier user questions, asked (and answered) first


def detect_format(path: Path) -> str:
    if path.is_dir() or path.suffix == ".json":
        return "squad"
    if path.suffix == ".jsonl":
        return "jsonl"
    raise RagError(f"{path}: cannot tell the dataset format from the name; pass --format squad|jsonl")


def _squad_files(path: Path) -> list[Path]:
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not files:
        raise RagError(f"{path}: no .json files")
    return files


def load_squad(path: Path) -> tuple[CorpusLoad, list[EvalQuestion]]:
    """One article per paragraph, its title kept as the first line of the body (JSQuAD's `title [SEP]`)."""
    articles: list[Article] = []
    questions: list[EvalQuestion] = []
    for file in _squad_files(path):
        try:
            data = json.loads(file.read_text(encoding="utf-8"))["data"]
        except (OSError, ValueError, KeyError) as exc:
            raise RagError(f"{file}: not a SQuAD-format JSON file ({exc})") from None
        for entry in data:
            for paragraph in entry["paragraphs"]:
                context = paragraph["context"]
                title, sep, text = context.partition(" [SEP] ")
                if not sep:
                    title, text = entry["title"], context
                body = f"{title}\n{text.strip()}"
                article_id = "p" + hashlib.sha1(body.encode("utf-8")).hexdigest()[:12]
                articles.append(Article(article_id, f"{article_id}.md", title, UNDATED, "", (), (), "", "",
                                        body, (), article_id))
                for qa in paragraph["qas"]:
                    answers = tuple(dict.fromkeys(a["text"] for a in qa["answers"]))
                    questions.append(EvalQuestion(str(qa["id"]), qa["question"], answers, (article_id,)))
    unique = list({a.article_id: a for a in articles}.values())
    return CorpusLoad(unique, []), questions


def load_jsonl(path: Path) -> list[EvalQuestion]:
    """Single questions (`question`), or conversations (`turns`: the last turn is the one measured)."""
    questions = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            gold = tuple(f.removesuffix(".md") for f in item.get("gold_files", []) + item.get("alt_files", []))
            turns = item["turns"] if "turns" in item else [item]
            last = turns[-1]
            questions.append(EvalQuestion(item["id"], last["question"], tuple(last.get("answers", [])), gold,
                                          last.get("type", "factoid"), tuple(t["question"] for t in turns[:-1])))
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise RagError(f"{path}:{number}: not a question record ({exc})") from None
    return questions
