"""The owner's view in the service: each answer recorded in the query log without ever delaying or failing it,
the readers' feedback, and the report for /admin/report."""

from __future__ import annotations

import logging
import threading

from rag.errors import QueryLogOff, QueryLogUnreadable, RagError
from rag.querylog import Entry, QueryLog, QueryLogConfig, Rating, Report, parse_since
from rag.types import Answer

log = logging.getLogger(__name__)


def entry(answer: Answer, history_turns: int) -> Entry:
    return Entry(answer.question, history_turns, answer.answer, answer.abstained, answer.generator,
                 tuple(dict.fromkeys(c.article_id for c in answer.citations)),
                 answer.notice_code.value if answer.notice_code else None)


def _reason(exc: Exception) -> str:
    return exc.message if isinstance(exc, RagError) else repr(exc)


class AnswerLog:
    """The service's query log, or none when it is turned off (answers then carry `answer_id: null`).

    Answers get their id when they are complete and are written after they were sent. A log that cannot be
    opened or written is a warning in the server log (once, until it works again), never a failed answer."""

    def __init__(self, config: QueryLogConfig | None):
        self.config = config
        self._log: QueryLog | None = None
        self._lock = threading.Lock()
        self._failing = False

    def open(self) -> None:
        """Open the file (and delete rows past the retention); at startup."""
        if self.config is None:
            return
        try:
            self._log = QueryLog(self.config)
        except RagError as exc:
            self._warn(exc.message)

    def stamp(self, answer: Answer) -> Answer:
        """Give a complete answer its id (None while the log is off or unavailable), before it is sent."""
        answer.answer_id = QueryLog.new_id() if self._log is not None else None
        return answer

    def record(self, answer: Answer, history_turns: int) -> None:
        """Write a stamped answer, once it was sent."""
        if answer.answer_id is None or self._log is None:
            return
        try:
            self._log.record(answer.answer_id, entry(answer, history_turns))
        except Exception as exc:  # noqa: BLE001  (the answer was sent; the log must not turn it into an error)
            self._warn(_reason(exc))
        else:
            with self._lock:
                if self._failing:
                    self._failing = False
                    log.warning("the query log is written again")

    def _warn(self, reason: str) -> None:
        with self._lock:
            first, self._failing = not self._failing, True
        if first:
            log.warning("query log: %s; answers go on without it", reason)

    def _open_log(self) -> QueryLog:
        if self.config is None:
            raise QueryLogOff("the query log is turned off (RAG_QUERY_LOG=off)")
        if self._log is None:
            raise QueryLogUnreadable("the query log is unavailable (the server log says why)")
        return self._log

    def feedback(self, answer_id: str, rating: Rating, comment: str | None) -> None:
        self._open_log().feedback(answer_id, rating, comment)

    def report(self, since: str) -> Report:
        """The report since `since` (7d, 24h or a date)."""
        query_log = self._open_log()
        return query_log.report(parse_since(since, query_log.clock()))
