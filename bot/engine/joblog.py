"""Which job a log line is about: set while a job is driven, read by the log's formatter.

The engine marks the job it is driving (``job_logged``); a line that names a job itself
("job 12 delivered") says which one without it. The adapters' JSON log reads both through
``logged_job_id``, so every line about a job carries its id, whichever module wrote it.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from contextvars import ContextVar

_driven: ContextVar[int | None] = ContextVar("kling_job", default=None)
_NAMED = re.compile(r"\bjob (\d+)\b")  # how the engine's log lines name a job


@contextlib.contextmanager
def job_logged(job_id: int) -> Iterator[None]:
    """Lines logged inside (and in tasks started inside) are about ``job_id``."""
    token = _driven.set(job_id)
    try:
        yield
    finally:
        _driven.reset(token)


def logged_job_id(record: logging.LogRecord) -> int | None:
    """The job a record is about: the one its message names, else the one being driven."""
    named = _NAMED.search(record.getMessage())
    return int(named.group(1)) if named else _driven.get()
