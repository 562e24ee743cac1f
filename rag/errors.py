"""Every error a user can meet, each with its own message, HTTP status and CLI exit code.

The CLI prints `message` on one line and exits with `exit_code`; the service renders it as JSON
`{"error": message, "status": status}`. Raise these, never bare exceptions, for anything a user caused
or can fix.
"""

from __future__ import annotations


def encodable(text: str) -> str:
    """`text` with any lone surrogate written as `\\udXXX`: an error that quotes bad input can always be sent
    as UTF-8 (a JSON `\\ud800` escape without its pair, or invalid UTF-8 read leniently, leaves one)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class RagError(Exception):
    status = 400
    exit_code = 2
    retry_after: int | None = None  # seconds, for a failure that will pass by itself (HTTP Retry-After)

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


# -- settings and set-up


class InvalidSetting(RagError):
    """A setting names something that does not exist (a retriever, a backend, a store, a rule set)."""

    status = 500


class ModelNotInstalled(RagError):
    status = 503


# -- the corpus


class CorpusNotFound(RagError):
    status = 500


class ImageNotFound(RagError):
    """An article without an image the service can serve (none, elsewhere, missing or not an image)."""

    status = 404


class MalformedArticle(RagError):
    """A corpus file that cannot be read as an article; the build skips it."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


# -- the index


class IndexNotBuilt(RagError):
    status = 503


class IndexDamaged(RagError):
    """A file of the live generation cannot be read (truncated, corrupt, missing); only a rebuild helps.

    The message names the generation and the file, never a library's own text or an absolute path."""

    status = 500


class IndexMismatch(RagError):
    """The index was built with other settings than the configured ones (model, vectors, analysis, format)."""

    status = 500


class IndexWriteFailed(RagError):
    """The new generation could not be written (a full disk, a file-size limit); the live one is untouched."""

    status = 500


class StoreUnavailable(RagError):
    """The index's engine (Milvus) cannot be reached, refused the credentials or did not answer in time."""

    status = 503
    retry_after = 5


class IndexBusy(RagError):
    """Another build holds the index's lock."""

    status = 409


# -- asking


class InvalidQuestion(RagError):
    status = 422


class UnknownGenerator(RagError):
    status = 422


class GeneratorNotConfigured(RagError):
    """Raised by a generator's factory when its settings are incomplete: the generator is then not offered."""

    status = 422


# -- the query log (rag/querylog.py)


class QueryLogOff(RagError):
    """The query log is turned off (RAG_QUERY_LOG=off), so there is nothing to rate or report."""

    status = 404


class QueryLogUnreadable(RagError):
    """The log file cannot be opened or used (damaged, another schema version, locked for too long)."""

    status = 503


class UnknownAnswer(RagError):
    """Feedback for an answer id the log does not hold (never given out, or older than the retention)."""

    status = 404


class InvalidPeriod(RagError):
    """A report's `since` that is neither 7d, 24h nor a date."""

    status = 422


# -- the service


class ServiceUnavailable(RagError):
    status = 503

    def __init__(self, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class ReloadFailed(RagError):
    """The live generation could not be opened; the engine that was serving goes on serving."""

    status = 500


class AdminAuthError(RagError):
    status = 401


class AdminDisabled(RagError):
    status = 403
