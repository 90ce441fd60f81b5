"""Warnings of the libraries under test, captured while a target runs and summarised once per
row of a report ("trl warned 708 times: ...") instead of printed once per call.

Both channels are captured: Python's ``warnings`` and ``logging`` records of WARNING and above
(transformers' own stderr handler, and libraries such as TRL that log through the root logger
or Python's last-resort handler).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections import Counter
from pathlib import Path


class _Collect(logging.Handler):
    def __init__(self, sink: list):
        super().__init__(logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a library's malformed log call
            message = str(record.msg)
        self.sink.append((record.name.split(".")[0] or "root", message))


def _library(filename: str) -> str:
    parts = Path(filename).parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts and parts.index(marker) + 1 < len(parts):
            return parts[parts.index(marker) + 1].removesuffix(".py")
    return Path(filename).stem


@contextlib.contextmanager
def captured():
    """Collect ``(library, message)`` pairs of the warnings and log records inside the block,
    printing none of them."""
    seen: list = []
    handler = _Collect(seen)
    root = logging.getLogger()
    loggers = [root] + [lg for lg in list(logging.Logger.manager.loggerDict.values())
                        if isinstance(lg, logging.Logger) and lg.handlers and not lg.propagate]
    saved = [(lg, lg.handlers[:]) for lg in loggers]
    for lg in loggers:
        lg.handlers = [handler]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield seen
    finally:
        for lg, handlers in saved:
            lg.handlers = handlers
        seen.extend((_library(w.filename), str(w.message)) for w in caught)


def summarise(seen: list) -> list[dict]:
    """One entry per library and message (its first line), most frequent first."""
    counts = Counter((lib, (msg.strip().splitlines() or [""])[0]) for lib, msg in seen)
    return [{"library": lib, "count": n, "message": msg}
            for (lib, msg), n in counts.most_common()]


def lines(summary: list[dict]) -> list[str]:
    return [f"{w['library']} warned {'once' if w['count'] == 1 else str(w['count']) + ' times'}: "
            f"{w['message']}" for w in summary]
