"""``datasets`` inside an adapter's ``collate``: no progress bars, and no fingerprint hashing for
datasets that live in memory.

An adapter hands its library a ``datasets.Dataset.from_list(...)``: an in-memory table, for which
``map`` and ``filter`` write no cache file. ``datasets`` still computes a fingerprint for every
transform, by hashing the transform with dill, closure included; a library's map function closes
over the tokenizer, so every ``collate`` call hashes the tokenizer's whole vocabulary (on the
bundled 4,096-token vocabulary, 16 s of the 50 s a failing TRL row took; on a 151k vocabulary
most of each call). On an in-memory dataset that fingerprint names nothing.

Inside :func:`in_memory_datasets`, caching is disabled and ``update_fingerprint`` (a
transform's fingerprint) and ``generate_fingerprint`` (a new dataset's, which hashes the whole
table) return a random fingerprint: what ``datasets`` itself does when a transform cannot be
hashed ("this doesn't affect caching since it's disabled"). The rows the library builds are
the same; only the fingerprint attribute of each dataset differs, and no library the suite
drives reads it.
Where a ``datasets`` version has no such function, nothing is patched (the calls are only slower).
"""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def in_memory_datasets():
    """Progress bars off, caching off and random transform fingerprints, restored on exit."""
    import datasets

    try:
        from datasets import arrow_dataset, fingerprint
    except ImportError:  # pragma: no cover - every supported datasets has both modules
        arrow_dataset = fingerprint = None
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    random_fp = getattr(fingerprint, "generate_random_fingerprint", None)
    patched = []  # (module, name, original)
    caching = None
    if random_fp is not None:
        caching = datasets.is_caching_enabled()
        datasets.disable_caching()
        replacements = {
            # a transform's fingerprint: hashes the transform and its arguments
            "update_fingerprint": lambda fingerprint_, transform, transform_args: random_fp(),
            # a new dataset's fingerprint (``from_list``): hashes the whole table
            "generate_fingerprint": lambda dataset: random_fp(),
        }
        for name, replacement in replacements.items():
            original = getattr(fingerprint, name, None)
            if original is None:
                continue
            for module in (fingerprint, arrow_dataset):
                if getattr(module, name, None) is original:
                    setattr(module, name, replacement)
                    patched.append((module, name, original))
    try:
        yield
    finally:
        for module, name, original in patched:
            setattr(module, name, original)
        if caching:
            datasets.enable_caching()
        if bars:
            datasets.enable_progress_bars()
