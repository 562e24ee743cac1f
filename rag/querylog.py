"""The query log: the questions readers asked through the service, their answers and the readers' feedback,
in one SQLite file, so the blog's owner learns what is asked and what the blog does not answer (`rag report`).

What a record holds: a random id (the client's handle for feedback), the UTC time, the question, how many
earlier turns it followed, the answer, whether it abstained, the generator, the cited article ids and the
notice code. Nothing about the reader: no IP address, user agent or other header is ever passed in.

Several threads and worker processes write to one file: each write opens its own connection and is one
short transaction (WAL mode, a busy timeout). Rows older than the retention are deleted when the log
opens and at most once an hour while it is written.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from pathlib import Path

from rag.errors import InvalidPeriod, QueryLogUnreadable, UnknownAnswer
from rag.japanese import normalize

SCHEMA_VERSION = 1  # PRAGMA user_version of the file
MAX_COMMENT_CHARS = 1000  # of a feedback comment (the service refuses longer ones)
BUSY_TIMEOUT_S = 2.0  # a writer waits this long for another one's transaction
PURGE_EVERY_S = 3600.0
REPORT_ROWS = 20  # questions listed per section of a report

SCHEMA = ["""
CREATE TABLE IF NOT EXISTS questions (
    answer_id TEXT PRIMARY KEY,
    asked_at TEXT NOT NULL,          -- UTC, ISO 8601 to the second
    question TEXT NOT NULL,
    history_turns INTEGER NOT NULL,  -- earlier turns sent with it: > 0 is a follow-up
    answer TEXT NOT NULL,
    abstained INTEGER NOT NULL,
    generator TEXT NOT NULL,
    cited TEXT NOT NULL,             -- JSON list of the cited article ids
    notice_code TEXT
)""", "CREATE INDEX IF NOT EXISTS questions_by_time ON questions (asked_at)", """
CREATE TABLE IF NOT EXISTS feedback (
    answer_id TEXT PRIMARY KEY,      -- one rating per answer: a second one replaces the first
    rating TEXT NOT NULL CHECK (rating IN ('up', 'down')),
    comment TEXT,
    given_at TEXT NOT NULL
)"""]

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


class Rating(StrEnum):
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True)
class QueryLogConfig:
    path: Path
    retention_days: int


@dataclass(frozen=True)
class Entry:
    """One answered question, as the service records it."""

    question: str
    history_turns: int
    answer: str
    abstained: bool
    generator: str
    cited: tuple[str, ...]
    notice_code: str | None


@dataclass(frozen=True)
class AskedQuestion:
    text: str  # the question as a reader first wrote it
    count: int  # how often it was asked (same text after NFKC and whitespace folding)


@dataclass(frozen=True)
class DownVote:
    answer_id: str
    given_at: str
    question: str
    answer: str
    comment: str | None


@dataclass(frozen=True)
class Day:
    date: str  # YYYY-MM-DD, UTC
    questions: int
    abstentions: int
    down_votes: int


@dataclass(frozen=True)
class Report:
    since: str
    until: str
    questions: int
    abstentions: int
    up_votes: int
    down_votes: int
    most_asked: list[AskedQuestion]
    unanswered: list[AskedQuestion]  # abstained: what the blog could write about next
    down_voted: list[DownVote]
    days: list[Day]


_SPACE_BY_JAPANESE = re.compile(r"(?<=[^\x00-\x7f]) | (?=[^\x00-\x7f])")


def question_key(text: str) -> str:
    """What makes two questions the same one: NFKC, lower case, runs of white space as one space, and none
    beside a Japanese character (Japanese puts no spaces between words: 富士山の　標高は = 富士山の標高は)."""
    return _SPACE_BY_JAPANESE.sub("", " ".join(normalize(text).split()))


_PERIOD = re.compile(r"(\d{1,5})([dh])")


def parse_since(text: str, now: datetime) -> datetime:
    """The start of a report's period: `7d` (days back), `12h` (hours back) or an ISO date (UTC midnight)."""
    value = text.strip()
    if match := _PERIOD.fullmatch(value):
        amount, unit = int(match.group(1)), match.group(2)
        if amount > 0:
            return now - (timedelta(days=amount) if unit == "d" else timedelta(hours=amount))
    elif re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        try:
            return datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
        except ValueError:
            pass
    raise InvalidPeriod(f"since: {text!r} is not a period: write 7d (days), 24h (hours) or a date (YYYY-MM-DD)")


class QueryLog:
    """The log file: `record` and `feedback` write, `report` reads. Safe to share between threads."""

    def __init__(self, config: QueryLogConfig, clock: Clock = utc_now):
        self.config = config
        self.clock = clock
        self._purged_at = time.monotonic()
        try:
            config.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise QueryLogUnreadable(f"the query log {config.path.name} cannot be created ({exc.strerror})") from exc
        with self._connection(wal=True) as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise QueryLogUnreadable(f"the query log {config.path.name} has schema version {version}; this "
                                         f"version of jrag reads {SCHEMA_VERSION}")
            for statement in SCHEMA:
                db.execute(statement)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self.purge()

    @contextmanager
    def _connection(self, wal: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection for one transaction (committed on success), closed afterwards; `wal` first puts the
        file in WAL mode (readers never block the writer; the mode is kept in the file)."""
        try:
            db = sqlite3.connect(self.config.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise QueryLogUnreadable(f"the query log {self.config.path.name} cannot be opened") from exc
        try:
            if wal:
                db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # durable enough for a log in WAL mode, and a faster commit
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            why = (f"is busy (another writer held it for over {BUSY_TIMEOUT_S:g} s)" if "locked" in str(exc)
                   else "is damaged or not a query log")
            raise QueryLogUnreadable(f"the query log {self.config.path.name} {why}") from exc
        finally:
            db.close()

    @staticmethod
    def new_id() -> str:
        return secrets.token_urlsafe(12)

    def record(self, answer_id: str, entry: Entry) -> None:
        with self._connection() as db:
            db.execute("INSERT INTO questions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (answer_id, _stamp(self.clock()), entry.question, entry.history_turns, entry.answer,
                        int(entry.abstained), entry.generator, json.dumps(list(entry.cited), ensure_ascii=False),
                        entry.notice_code))
        if time.monotonic() - self._purged_at > PURGE_EVERY_S:
            self.purge()

    def feedback(self, answer_id: str, rating: Rating, comment: str | None = None) -> None:
        """Store a reader's rating of an answer (raises UnknownAnswer for an id the log does not hold)."""
        with self._connection() as db:
            stored = db.execute(
                "INSERT INTO feedback SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM questions WHERE answer_id = ?) "
                "ON CONFLICT (answer_id) DO UPDATE SET rating = excluded.rating, comment = excluded.comment, "
                "given_at = excluded.given_at",
                (answer_id, Rating(rating).value, comment, _stamp(self.clock()), answer_id)).rowcount
        if not stored:
            raise UnknownAnswer(f"no answer with id {answer_id!r} in the query log (it may be older than the "
                                f"retention of {self.config.retention_days} days)")

    def purge(self) -> int:
        """Delete what is older than the retention; returns the number of questions deleted."""
        cutoff = _stamp(self.clock() - timedelta(days=self.config.retention_days))
        with self._connection() as db:
            deleted = db.execute("DELETE FROM questions WHERE asked_at < ?", (cutoff,)).rowcount
            db.execute("DELETE FROM feedback WHERE answer_id NOT IN (SELECT answer_id FROM questions)")
        self._purged_at = time.monotonic()
        return deleted

    def report(self, since: datetime, limit: int = REPORT_ROWS) -> Report:
        """What was asked from `since` until now: the most asked, the unanswered, the down-voted, and per day."""
        until = self.clock()
        start = _stamp(since)
        with self._connection() as db:
            asked = db.execute("SELECT question, abstained, asked_at FROM questions WHERE asked_at >= ? "
                               "ORDER BY asked_at", (start,)).fetchall()
            votes = db.execute(
                "SELECT f.answer_id, f.rating, f.comment, f.given_at, q.question, q.answer FROM feedback f "
                "JOIN questions q USING (answer_id) WHERE f.given_at >= ? ORDER BY f.given_at DESC",
                (start,)).fetchall()
        down = [v for v in votes if v[1] == Rating.DOWN]
        return Report(
            since=start, until=_stamp(until), questions=len(asked), abstentions=sum(a[1] for a in asked),
            up_votes=len(votes) - len(down), down_votes=len(down),
            most_asked=_most_asked([a[0] for a in asked], limit),
            unanswered=_most_asked([a[0] for a in asked if a[1]], limit),
            down_voted=[DownVote(answer_id, given_at, question, answer, comment)
                        for answer_id, _, comment, given_at, question, answer in down[:limit]],
            days=_days(since, until, asked, down))


def _most_asked(questions: list[str], limit: int) -> list[AskedQuestion]:
    counts: Counter[str] = Counter()
    first_written: dict[str, str] = {}
    for text in questions:
        key = question_key(text)
        counts[key] += 1
        first_written.setdefault(key, text)
    # most asked first; equal counts in the order they were first asked
    return [AskedQuestion(first_written[key], count) for key, count in counts.most_common(limit)]


def _days(since: datetime, until: datetime, asked: list[tuple], down: list[tuple]) -> list[Day]:
    """Every UTC day of the period, those without questions included (a chart's gaps are real)."""
    questions: Counter[str] = Counter(a[2][:10] for a in asked)
    abstentions: Counter[str] = Counter(a[2][:10] for a in asked if a[1])
    down_votes: Counter[str] = Counter(v[3][:10] for v in down)
    day, last = since.astimezone(UTC).date(), until.astimezone(UTC).date()
    days = []
    while day <= last:
        key = day.isoformat()
        days.append(Day(key, questions[key], abstentions[key], down_votes[key]))
        day += timedelta(days=1)
    return days


# -- the report's files (rag report)

CSV_NAME = "report.csv"
CHART_NAME = "questions_per_day.png"


def write_report_files(report: Report, out: Path) -> list[Path]:
    """`report.csv` (one row per day: date, questions, abstentions, down votes) and its chart."""
    import csv

    out.mkdir(parents=True, exist_ok=True)
    table, chart = out / CSV_NAME, out / CHART_NAME
    with table.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["date", "questions", "abstentions", "down_votes"])
        writer.writerows([d.date, d.questions, d.abstentions, d.down_votes] for d in report.days)
    chart.write_bytes(chart_png(report))
    return [table, chart]


def chart_png(report: Report) -> bytes:
    """The questions and abstentions per day as a PNG bar chart (for `rag report` and /admin)."""
    import io

    from matplotlib.figure import Figure  # no pyplot: no global state, safe in the service's threads

    days = [date.fromisoformat(d.date) for d in report.days]
    fig = Figure(figsize=(7, 3.5), dpi=110)
    ax = fig.subplots()
    ax.bar(days, [d.questions for d in report.days], color="#1f5fbf", label="questions")
    ax.bar(days, [d.abstentions for d in report.days], color="#e0a43a", label="abstentions (no answer)")
    ax.set_ylabel("per day (UTC)")
    ax.set_title(f"Questions asked, {report.since[:10]} to {report.until[:10]}")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.autofmt_xdate()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
