"""Rows of a long command (``report -j N``, ``mutants -j N``) run in worker processes, and the
progress bar those commands show on a terminal.

A row is a call of a module-level function on picklable arguments; its result comes back to the
parent, which keeps the original order. Workers are started with ``spawn`` (``forkserver`` where
asked): the parent has imported torch and may hold threads, which ``fork`` does not copy safely.
Each worker gets ``cores // jobs`` torch threads, so that N workers do not oversubscribe the
machine.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
from collections.abc import Callable, Iterator, Sequence

#: the start method of the worker processes (``SFT_CONFORMANCE_START_METHOD`` overrides it)
START_METHOD = os.environ.get("SFT_CONFORMANCE_START_METHOD", "spawn")


def _init_worker(threads: int) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        import torch

        torch.set_num_threads(max(1, threads))
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def _call(fn: Callable, args: tuple):
    result = fn(*args)
    try:
        pickle.dumps(result)
    except Exception:  # an unpicklable object in a counterexample: keep its text
        import json

        result = json.loads(json.dumps(result, default=str))
    return result


def run_rows(fn: Callable, items: Sequence[tuple], *, jobs: int = 1,
             first: Sequence[int] | None = None) -> Iterator[tuple[int, object]]:
    """``(index, fn(*items[index]))`` for every item: in order, in this process, with
    ``jobs <= 1``; in completion order from ``jobs`` worker processes otherwise (the caller
    puts the results back in the items' order by their index). ``first``: the indices in the
    order the workers should take them (the longest rows first, so that no long row starts
    last); the default is the items' order."""
    if jobs <= 1 or len(items) <= 1:
        for i, args in enumerate(items):
            yield i, fn(*args)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    workers = min(jobs, len(items))
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context(START_METHOD)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context,
                             initializer=_init_worker, initargs=(threads,)) as pool:
        order = list(first) if first is not None else []
        order += [i for i in range(len(items)) if i not in set(order)]
        futures = {pool.submit(_call, fn, tuple(items[i])): i for i in order}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def jobs_argument(value: str) -> int:
    """``-j N``: a positive number of worker processes (``-j 0``: one per CPU core)."""
    import argparse

    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of processes, got {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected 0 (one per core) or more, got {n}")
    return n or (os.cpu_count() or 1)


#: without ``-j``, a long command runs its rows in one worker process per CPU core, at most
#: this many (each worker imports torch and transformers and holds its own models)...
AUTO_MAX_JOBS = 4
#: ...and only when it has at least this many rows (a worker's start costs seconds of imports)
AUTO_MIN_ROWS = 8


def auto_jobs(rows: int) -> int:
    """The number of worker processes for ``rows`` rows when ``-j`` is not given: one per core
    (at most :data:`AUTO_MAX_JOBS`) for a long command, 1 (this process) for a short one."""
    if rows < AUTO_MIN_ROWS:
        return 1
    return max(1, min(os.cpu_count() or 1, AUTO_MAX_JOBS, rows // AUTO_MIN_ROWS))


def show_progress(quiet: bool = False) -> bool:
    """A progress bar only on a terminal: never when stderr is redirected, under ``--json -``
    style output (``quiet``) or with ``SFT_CONFORMANCE_NO_PROGRESS`` set."""
    if quiet or os.environ.get("SFT_CONFORMANCE_NO_PROGRESS"):
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """A tqdm bar on stderr (rows done, elapsed, estimate) and ``echo`` for the per-row lines,
    which go to stdout as before, without tearing the bar. Without a terminal (or tqdm) the
    bar is off and ``echo`` is the plain line callback."""

    def __init__(self, total: int, desc: str, *, enabled: bool | None = None,
                 echo: Callable[[str], None] | None = None):
        self._echo = echo or (lambda line: print(line, flush=True))
        self.bar = None
        if enabled is None:
            enabled = show_progress()
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=total, desc=desc, unit="row", file=sys.stderr,
                            dynamic_ncols=True, leave=False)

    def echo(self, line: str) -> None:
        if self.bar is None:
            self._echo(line)
            return
        with self.bar.external_write_mode(file=sys.stdout):
            self._echo(line)

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@contextlib.contextmanager
def progress(total: int, desc: str, *, enabled: bool | None = None,
             echo: Callable[[str], None] | None = None):
    bar = Progress(total, desc, enabled=enabled, echo=echo)
    try:
        yield bar
    finally:
        bar.close()
