"""``report -j N`` and ``mutants -j N``: rows in worker processes give the verdicts of the serial
run, in the same order (a few checks per row, to stay fast on 2 cores)."""

from __future__ import annotations

import pytest

from sft_conformance import parallel, report
from sft_conformance.cli import main

#: two good rows and two mutants, on the checks that tell them apart
ROWS = ["reference", "mutant-eos-masked-by-value", "textbook-seed000", "mutant-off-by-one-late"]
ONLY = ["S2", "S4"]


def _verdicts(data: dict) -> list:
    return [(run["spec"], run["error"],
             [(c["id"], c["status"], c["judged"], c["message"]) for c in run["checks"]])
            for run in data["runs"]]


@pytest.mark.slow  # about 50 s on a loaded 2-core machine; the fast one below has two rows
def test_report_rows_in_processes_judge_as_the_serial_run():
    lines: list[str] = []
    serial = report.run_matrix(ROWS, only=ONLY, progress=lines.append)
    assert "jobs" not in serial
    parallel_lines: list[str] = []
    spread = report.run_matrix(ROWS, only=ONLY, progress=parallel_lines.append, jobs=2)
    assert spread["jobs"] == 2
    assert [r["spec"] for r in spread["runs"]] == ROWS  # the original order
    assert _verdicts(spread) == _verdicts(serial)
    statuses = {run["spec"]: {c["id"]: c["status"] for c in run["checks"]}
                for run in serial["runs"]}
    assert statuses["reference"] == {"S2": "passed", "S4": "passed"}
    assert statuses["mutant-eos-masked-by-value"]["S4"] == "failed"
    assert statuses["mutant-off-by-one-late"]["S2"] == "failed"
    # one line per row either way (completion order in processes)
    assert sorted(line.split(":")[0] for line in parallel_lines if not line.startswith(" ")) \
        == sorted(ROWS)
    for run in spread["runs"]:  # warnings captured per row, in the worker
        assert isinstance(run["library_warnings"], list) and run["seconds"] > 0


def test_two_rows_in_two_processes():
    rows = ["reference", "mutant-eos-masked-by-value"]
    serial = report.run_matrix(rows, only=["S4"], progress=lambda line: None)
    spread = report.run_matrix(rows, only=["S4"], progress=lambda line: None, jobs=2)
    assert [r["spec"] for r in spread["runs"]] == rows
    assert _verdicts(spread) == _verdicts(serial)
    assert [r["checks"][0]["status"] for r in spread["runs"]] == ["passed", "failed"]


@pytest.mark.slow  # 22 s on a loaded 2-core machine (the same worker machinery as report -j)
def test_mutants_in_processes_print_the_serial_tables(capsys):
    argv = ["mutants", "--only-meant", "--mutant", "mutant-eos-masked-by-value",
            "--mutant", "mutant-off-by-one-late"]
    assert main(argv) == 0
    serial = capsys.readouterr().out
    assert main([*argv, "-j", "2"]) == 0
    spread = capsys.readouterr().out

    def tables(out: str) -> str:  # the tables and the summary, not the per-row lines or time
        return out[out.index("| mutant"):out.rindex("\nin ")]

    assert tables(spread) == tables(serial)
    assert "2/2 mutants killed" in spread


def test_jobs_argument():
    import argparse
    import os

    assert parallel.jobs_argument("3") == 3
    assert parallel.jobs_argument("0") == (os.cpu_count() or 1)
    with pytest.raises(argparse.ArgumentTypeError):
        parallel.jobs_argument("-1")
    with pytest.raises(argparse.ArgumentTypeError):
        parallel.jobs_argument("many")


def test_progress_bar_only_on_a_terminal(capsys, monkeypatch):
    """Captured stderr is no terminal: no bar, and the row lines go to stdout as before."""
    assert parallel.show_progress() is False
    assert parallel.show_progress(quiet=True) is False
    with parallel.progress(2, "rows") as bar:
        assert bar.bar is None
        bar.echo("row a: done")
        bar.update()
    out, err = capsys.readouterr()
    assert out == "row a: done\n" and err == ""


def test_progress_bar_keeps_the_row_lines(capsys):
    """With the bar forced on, the row lines still reach stdout whole; the bar is on stderr."""
    pytest.importorskip("tqdm")
    with parallel.progress(2, "rows", enabled=True) as bar:
        assert bar.bar is not None
        bar.echo("row a: done")
        bar.update()
        bar.echo("row b: done")
        bar.update()
    out, err = capsys.readouterr()
    assert out.splitlines() == ["row a: done", "row b: done"]
    assert "rows:" in err and "1/2" in err
