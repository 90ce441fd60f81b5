"""The benchmark regression gate: real-token throughput against a stored baseline (issue #5)."""

from __future__ import annotations

import json
from pathlib import Path

from tabulate import tabulate


class DeviceMismatch(ValueError):
    """The baseline was measured on another device; throughputs are not comparable."""


def load(path: str | Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def device_key(results: dict) -> str:
    d = results["device"]
    return f"{d['kind']}:{d['name']}"


def compare(current: dict, baseline: dict, fail_above_pct: float) -> tuple[bool, str, list]:
    """Return ``(passed, table, regressions)``; raise :class:`DeviceMismatch` across devices."""
    if device_key(current) != device_key(baseline):
        raise DeviceMismatch(f"baseline was measured on {device_key(baseline)!r}, this run on "
                             f"{device_key(current)!r}; throughput is only compared on the same "
                             "device")
    rows, regressions = [], []
    for s, base in baseline["strategies"].items():
        cur = current["strategies"].get(s)
        if "error" in base or "real_tokens_per_s" not in base:
            continue
        if cur is None or "real_tokens_per_s" not in cur:
            rows.append([s, f"{base['real_tokens_per_s']['median']:,.0f}", "missing", "", "-"])
            continue
        b, c = base["real_tokens_per_s"]["median"], cur["real_tokens_per_s"]["median"]
        change = 100 * (c - b) / b
        bad = -change > fail_above_pct
        if bad:
            regressions.append({"strategy": s, "baseline": b, "current": c,
                                "change_pct": change})
        rows.append([s, f"{b:,.0f}", f"{c:,.0f}", f"{change:+.1f}%",
                     "REGRESSION" if bad else "ok"])
    table = tabulate(rows, headers=["strategy", "baseline real tok/s", "current real tok/s",
                                    "change", f"gate (drop > {fail_above_pct:g}%)"],
                     tablefmt="github", disable_numparse=True)
    return not regressions, table, regressions
