"""Error types shared by every layer.

The message of a :class:`NollyError` is shown to the editor as the job's ``error_message``,
so it must be one readable sentence: no traceback, no secret, no internal path. Whether an
error is worth retrying is part of its type, so the orchestration layer can decide without
parsing strings.
"""

from __future__ import annotations

import re

_URL_QUERY = re.compile(r"(https?://[^\s?#]+)\?[^\s]*")


class NollyError(Exception):
    """An error whose message is safe and useful to show to the user."""

    @property
    def message(self) -> str:
        return str(self)


class PermanentError(NollyError):
    """Retrying cannot help: bad input, a model that reported failure, a missing backend."""


class InputError(PermanentError):
    """The job's input (row, URL, file or settings) is not acceptable."""


class TransientError(NollyError):
    """A network hiccup, a 5xx or a rate limit: the same call may succeed later."""


class CanceledError(PermanentError):
    """The user asked to cancel the job (``cancel_requested_at``)."""

    def __init__(self) -> None:
        super().__init__("canceled by user")


class StaleRunError(PermanentError):
    """This run no longer owns the job row (a newer attempt or another run took it over)."""


def internal_error_message(exc: BaseException | None, step: str) -> str:
    """What the user sees for an unexpected exception: its type, never its text or traceback
    (which may hold paths or credentials); the details stay in the run log."""
    kind = type(exc).__name__ if exc is not None else "unknown error"
    return f"internal error during {step} ({kind}); details are in the pipeline's run log"


def redact_urls(text: str) -> str:
    """Drop query strings from URLs in ``text``: presigned URLs carry credentials there."""
    return _URL_QUERY.sub(r"\1", text)
