"""Errors that carry their own user-facing message and HTTP status.

The CLI prints `message` on one line and exits with `exit_code`; the service renders it as JSON.
"""

from __future__ import annotations


class RagError(Exception):
    status = 400
    exit_code = 2

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class MalformedArticle(RagError):
    """A corpus file that cannot be read as an article; the build skips it."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class CorpusNotFound(RagError):
    status = 500


class ModelNotInstalled(RagError):
    status = 503


class IndexNotBuilt(RagError):
    status = 503


class IndexMismatch(RagError):
    status = 500
