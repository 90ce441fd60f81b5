"""The conformance matrix: targets by checks, then every failure explained with its
counterexample. Written to ``OUT/conformance.md`` and ``OUT/conformance.json`` (``--out``,
default ``sft-conformance-reports/``; the repository's committed ones with ``--out reports``)."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

from . import library_warnings
from .checks import CHECKS

SYMBOL = {"passed": "✓", "failed": "✗ fail", "xfail": "xfail", "skipped": "–", "error": "error"}

#: what a failure of each requirement means, in plain words, and what it costs in training
CONSEQUENCE = {
    "S1": ("Training sees different token ids than inference for the same conversation "
           "(a BPE merge across the prompt/response boundary, a doubled BOS).",
           "The model learns continuations of contexts it will never be given; quality drops "
           "at the boundary where the answer starts."),
    "S2": ("Some assistant tokens are never targets, typically the first one.",
           "The model never practises the step from the prompt to the first answer token, the "
           "single most important transition."),
    "S3": ("Tokens outside the assistant's turns (system, user, headers, glue) are trained.",
           "The model spends capacity learning to write user prompts; loss values are not "
           "comparable across data mixes."),
    "S4": ("The end-of-turn token of an assistant turn is not trained.",
           "The model never learns to stop: generations run on to the length limit."),
    "S5": ("Padding is trained or changes the logits of real tokens.",
           "The loss depends on what else is in the batch; left-padded batches learn from "
           "shifted or polluted contexts."),
    "S6": ("The loss is not the token mean over the batch's trained positions.",
           "Short answers weigh as much as long ones (or padding dilutes the loss): the "
           "optimiser sees a different objective than the one reported."),
    "S7": ("Micro-batches or ranks are averaged as means of means.",
           "Gradient accumulation changes the gradient: results depend on the accumulation "
           "steps and the number of GPUs."),
    "S8": ("Packed documents see each other, share positions, predict across boundaries or are "
           "split across rows.",
           "Each document is conditioned on unrelated text; packing silently changes the "
           "training data."),
    "S9": ("Truncation leaves NaN, a silent zero or an example with nothing to train, or loses "
           "the end token.",
           "Steps with NaN or zero loss, wasted compute, answers that never learn to stop."),
    "S10": ("In multi-turn conversations the wrong turns are trained.",
            "Earlier assistant turns are lost, or the model learns to write the user's turns."),
    "S11": ("What a message says moves the mask (a role word or a header look-alike).",
            "User text can switch training on or off: a prompt-injection of the loss mask."),
    "S12": ("An option that should not change the math (padding-free, a fused loss, batch "
            "size) changes the trained tokens or the loss.",
            "Turning on a speed option silently changes the training objective."),
}


class HandLoop:
    """A target as a hand-written training loop would call the model: its own ``forward`` is
    hidden, so the checks call ``model(input_ids, attention_mask, position_ids)`` with the
    model's default config."""

    def __init__(self, inner):
        self._inner = inner
        self.name = f"{inner.name} [hand loop]"
        self.known_failures = {}

    def __getattr__(self, key):
        if key == "forward":
            raise AttributeError(key)
        return getattr(self._inner, key)


#: the columns of the agentic matrix (``report --agentic``): the ids of the whole conversation
#: with its tools (S1), what is trained outside the assistant (S3), end tokens (S4) and the
#: agentic rules (S13-S15)
AGENTIC_CHECKS = ["S1", "S3", "S4", "S13", "S14", "S15"]


def run_row(spec, profile="ci", tokenizer=None, only: list[str] | None = None) -> dict:
    """One row of the matrix: every check (or the ``only`` ones) on ``spec``, with the hand-loop
    re-run of S5 and S8 for a target with a ``forward``, the library warnings it raised and its
    seconds, as the JSON entry of the report (a worker process of ``report -j N`` runs this)."""
    from .errors import ConfigurationError
    from .runner import RunShare, check_target
    from .target import declared, load_target

    t0 = time.perf_counter()
    with library_warnings.captured() as seen:  # summarised once per row, not per call
        try:
            target = load_target(spec)
        except ConfigurationError:
            target = spec  # check_target says why, as the row's error
        # the hand-loop re-run asks the same target object for the same batches: it goes on
        # from this run's tokenizers and collate memo (the calls are made once per row)
        share = RunShare()
        run = check_target(target, profile=profile, tokenizer=tokenizer, only=only,
                           spec=spec if isinstance(spec, str) else None, share=share)
        entry = run.to_json()
        entry["convention"] = "target.forward (the library's trainer call)"
        if run.error is None and (only is None or {"S5", "S8"} & set(only)):
            obj = target
            d = declared(obj)
            if d.has_forward and not d.missing:
                hand = check_target(HandLoop(obj), profile=profile, tokenizer=tokenizer,
                                    only=["S5", "S8"], spec=spec, share=share)
                entry["hand_loop"] = [r.to_json() for r in hand.results]
            else:
                entry["convention"] = ("model(input_ids, attention_mask, position_ids), "
                                       "default config (no forward declared)")
    entry["library_warnings"] = library_warnings.summarise(seen)
    entry["seconds"] = round(time.perf_counter() - t0, 1)
    return entry


def row_line(spec, entry: dict) -> list[str]:
    """The lines printed when a row is done: its statuses and seconds, then its warnings."""
    statuses = " ".join(f"{c['id']}:{c['status']}" for c in entry["checks"])
    if _not_installed(entry):
        statuses = "every check skipped, " + entry["checks"][0]["message"].splitlines()[0]
    return [f"{spec}: {statuses or entry['error']} ({entry['seconds']}s)",
            *(f"  {line}" for line in library_warnings.lines(entry["library_warnings"]))]


def run_matrix(targets, *, profile="ci", tokenizer=None, progress=print,
               only: list[str] | None = None, jobs: int = 1,
               show_progress: bool | None = False,
               seconds: dict[str, float] | None = None) -> dict:
    """Run every check (or the ``only`` ones) on every target; targets with a ``forward`` also
    run the model-level checks (S5, S8) under the hand-written-loop call convention.

    ``jobs > 1`` runs the rows in that many worker processes (sft_conformance.parallel); the
    rows keep the order of ``targets``; ``seconds`` (each row's seconds in an earlier report)
    lets the workers take the longest rows first. ``show_progress``: a progress bar on stderr
    (None: when stderr is a terminal)."""
    from . import parallel
    from .runner import library_versions

    started = time.perf_counter()
    targets = list(targets)
    done: dict[int, dict] = {}
    items = [(spec, profile, tokenizer, only) for spec in targets]
    with parallel.progress(len(items), "report", enabled=show_progress, echo=progress) as bar:
        first = sorted(range(len(targets)), key=lambda i: -(seconds or {}).get(targets[i], 0))
        for i, entry in parallel.run_rows(run_row, items, jobs=jobs, first=first):
            done[i] = entry
            for line in row_line(targets[i], entry):
                bar.echo(line)
            bar.update()
    runs = [done[i] for i in range(len(targets))]
    return {"generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "versions": library_versions(), "profile": profile, "tokenizer": tokenizer,
            "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPU cores, "
                       f"{platform.system()}",
            "seconds": round(time.perf_counter() - started, 1), "runs": runs,
            **({"only": list(only)} if only else {}),
            **({"jobs": jobs} if jobs > 1 else {})}


#: what the rows and the last column of the matrix are
LEGEND = [
    "Rows: `reference`, `reference-shifted` and `reference-packed` are this project's reference "
    "implementation (every check must pass in its own columns). `textbook-seed000` and "
    "`textbook-seed003` are the code of the seed textbooks the specification started from, "
    "kept as they were written: their failures are the bugs the checks exist for, not "
    "regressions. Every other row is a library configuration, run through its adapter "
    "(`sft-conformance targets` says what each one exercises).",
    "",
    "Model-level verdicts (S5, S8, S12) use the target's own `forward` (the call its library's "
    "trainer makes) where it declares one. The last column, *S5/S8 hand loop*, re-runs S5 and S8 "
    "as a hand-written loop calls the model: `model(input_ids, attention_mask, position_ids)` "
    "with the default config. A ✗ there is no failure of the target: it says that its batches "
    "are only right with its own `forward` (a block-diagonal mask or the flash-attention "
    "arguments of packed rows, as for `reference-packed`), so a loop that calls the model "
    "plainly lets packed documents attend to each other. `n/a`: the target declares no "
    "`forward`, so its own columns already used the plain call.",
]


#: what the agentic matrix's rows and columns are
AGENTIC_LEGEND = [
    "Rows: each library configuration's tool and reasoning path (a `tools` column, tool roles, "
    "function_call/observation, an agent template...), driven through its own configuration on "
    "conversations with tool calls, tool results and reasoning (docs/specification.md#agentic). "
    "Columns: S1 the ids equal the template's rendering of the whole conversation with its tools; "
    "S3 nothing outside the assistant is trained; S4 end tokens; S13 tool results never trained; "
    "S14 tool-call turns trained whole, end token included; S15 reasoning follows the declared "
    "rule.",
]


def _cell(check: dict) -> str:
    return SYMBOL.get(check["status"], check["status"])


def _tokenizer_line(name: str | None) -> str:
    if not name:
        return "the tiny bundled model and tokenizers"
    from .assets.families import FAMILIES

    family = FAMILIES.get(name)
    if family is None:
        return f"the tiny bundled model and the tokenizer `{name}`"
    return (f"the tokenizer `{name}` (a real vocabulary from the `{family.package}` package: "
            f"{family.quirk}; targets meant for a template with generation tags run on "
            f"`{name}-generation` where it exists) and the tiny check model")


def _not_installed(run: dict) -> bool:
    """A row of a run where the target's library was missing: every check skipped with the
    install hint."""
    checks = run.get("checks", [])
    return bool(checks) and all(c["status"] == "skipped" and "not installed" in c["message"]
                                for c in checks)


def bundled_baseline(out_dir: Path) -> dict | None:
    """The bundled-tokenizer verdicts a named tokenizer's matrix is compared with:
    ``out_dir/conformance.json``, with the rows its run could not judge (library not installed
    there) taken from the reports of the environments that have the library
    (``out_dir/<name>/conformance.json``: torchtune, the issue-13 libraries)."""
    main = out_dir / "conformance.json"
    if not main.is_file():
        return None
    baseline = json.loads(main.read_text(encoding="utf-8"))
    runs = {run["spec"]: run for run in baseline.get("runs", [])}
    for extra in sorted(out_dir.glob("*/conformance.json")):
        try:
            other = json.loads(extra.read_text(encoding="utf-8"))
        except ValueError:
            continue
        for run in other.get("runs", []):
            have = runs.get(run["spec"])
            if (have is None or _not_installed(have)) and not _not_installed(run):
                runs[run["spec"]] = dict(run, baseline_from=str(extra))
    return dict(baseline, runs=list(runs.values()))


def compare_with(data: dict, baseline: dict) -> list[str]:
    """Lines saying where this matrix's verdicts differ from ``baseline``'s (the bundled run)."""
    before = {run["spec"]: {c["id"]: c["status"] for c in run.get("checks", [])}
              for run in baseline.get("runs", []) if not _not_installed(run)}
    lines = []
    for run in data["runs"]:
        old = before.get(run["spec"])
        if old is None or _not_installed(run):
            continue
        for c in run.get("checks", []):
            was = old.get(c["id"])
            if was is not None and was != c["status"]:
                lines.append(f"- `{run['spec']}` {c['id']}: {was} with the bundled tokenizers, "
                             f"{c['status']} here")
    return lines or ["- no verdict differs from the bundled run"]


def render_markdown(data: dict, command: str) -> str:
    ids = [c.id for c in CHECKS if not data.get("only") or c.id in data["only"]]
    hand_col = not data.get("only") or bool({"S5", "S8"} & set(data["only"]))
    names = {c.id: c.name for c in CHECKS}
    title = ("# Agentic conformance matrix" if data.get("agentic") else "# Conformance matrix") \
        + (f": tokenizer `{data['tokenizer']}`" if data.get("tokenizer") else "")
    lines = [title, "",
             "Which SFT stacks conform to the specification S1-S15 (docs/specification.md), "
             f"checked with {_tokenizer_line(data.get('tokenizer'))}. ✓ passed, ✗ failed, "
             "xfail a failure the "
             "target declares (reason below), – skipped (reason below), error the target raised.",
             "", f"- Command: `{command}`", f"- Generated: {data['generated']} on "
             f"{data['machine']}, profile `{data['profile']}`, {data['seconds']} s"
             + (f" (the sum of {len(data['parts'])} parts)" if data.get("parts") else ""),
             "- Versions: " + ", ".join(f"{k} {v}" for k, v in data["versions"].items()),
             *[f"- Rows re-run: `{u['command']}` ({u['generated']}, {u['seconds']} s): "
               + ", ".join(f"`{t}`" for t in u["targets"])
               + ("" if u["versions"] == data["versions"] else "; versions: " + ", ".join(
                   f"{k} {v}" for k, v in u["versions"].items()))
               for u in data.get("updates", [])], *_part_lines(data), "",
             "| target | " + " | ".join(ids) + (" | S5/S8 hand loop |" if hand_col else " |"),
             "|---|" + "---|" * len(ids) + ("---|" if hand_col else "")]
    absent = [run for run in data["runs"] if _not_installed(run)]
    for run in data["runs"]:
        if run in absent:
            continue  # folded into one line below the rows that ran
        if run.get("error"):
            lines.append(f"| {run['target']} | error: {run['error'][:80]} |" + " |" * len(ids))
            continue
        by_id = {c["id"]: c for c in run["checks"]}
        hand = {c["id"]: c for c in run.get("hand_loop", [])}
        hand_cell = " / ".join(_cell(hand[i]) for i in ("S5", "S8") if i in hand) or "n/a"
        lines.append(f"| `{run['spec']}` | " + " | ".join(_cell(by_id[i]) if i in by_id else ""
                                                         for i in ids)
                     + (f" | {hand_cell} |" if hand_col else " |"))
    if absent:
        lines.append(f"| {len(absent)} target(s) whose library is not installed here: every "
                     "check skipped (listed under *Skipped and declared*) |"
                     + " |" * (len(ids) + 1))
    lines += ["", "Checks: " + "; ".join(f"{i} {names[i]}" for i in ids) + ".", "",
              *(LEGEND if not data.get("agentic") else AGENTIC_LEGEND), ""]
    if data.get("compared"):
        lines += ["## Compared with the bundled tokenizers", "",
                  "The bundled run is `conformance.json` beside this report; rows it could not "
                  "judge (library not installed there) are compared with the bundled report of "
                  "the library's own environment (`<library>/conformance.json`).", "",
                  *data["compared"], ""]
    if data.get("notes"):
        lines += ["## Notes (confirmed by hand)", "", data["notes"].strip(), ""]
    warned = [(run, library_warnings.lines(run["library_warnings"]))
              for run in data["runs"] if run.get("library_warnings")]
    if warned:
        lines += ["## Library warnings", "",
                  "What the libraries warned while their rows ran, once per row and message.", ""]
        lines += [f"- `{run['spec']}`: " + "; ".join(text) for run, text in warned]
        lines.append("")
    lines += ["## Skipped and declared", ""]
    by_hint: dict[str, list[str]] = {}
    for run in absent:
        by_hint.setdefault(run["checks"][0]["message"].splitlines()[0], []).append(run["spec"])
    for hint, specs in by_hint.items():
        lines.append(f"- not installed here ({len(specs)}): "
                     + ", ".join(f"`{s}`" for s in specs) + f": every check skipped: {hint}")
    for run in data["runs"]:
        if run in absent:
            continue
        grouped: dict[tuple[str, str], list[str]] = {}  # one line per reason, not per check
        for c in run.get("checks", []):
            if c["status"] in ("skipped", "xfail") and "no such capability" not in c["message"]:
                key = (c["status"], c["message"].splitlines()[0])
                grouped.setdefault(key, []).append(c["id"])
        if grouped:
            lines.append(f"- `{run['spec']}`: " + "; ".join(
                f"{', '.join(ids)} {status}: {reason}"
                for (status, reason), ids in grouped.items()))
    lines += ["", "Checks skipped for a missing capability (no `loss`, no packing, single-turn "
              "only) are not listed.", "", "## Failures", ""]
    for run in data["runs"]:
        failures = [c for c in run.get("checks", []) if c["status"] in ("failed", "error")]
        failures += [dict(c, id=c["id"] + " (hand loop)") for c in run.get("hand_loop", [])
                     if c["status"] in ("failed", "error")]
        for c in failures:
            base = c["id"].split()[0]
            what, consequence = CONSEQUENCE.get(base, ("", ""))
            lines += [f"### `{run['spec']}` {c['id']} {c['check']}: {c['status']}", "",
                      f"**In plain words:** {what}  ", f"**Consequence:** {consequence}", "",
                      "```text", c["message"].strip(), "```", ""]
    return "\n".join(lines) + "\n"


def paths(out_dir: Path, tokenizer: str | None, agentic: bool = False) -> tuple[Path, Path]:
    """``conformance.{md,json}``, or ``conformance-<tokenizer>.{md,json}`` for a named
    tokenizer's matrix, in ``out_dir`` (``agentic...`` for the agentic matrix)."""
    tok = tokenizer
    base = "agentic" if agentic else "conformance"
    stem = f"{base}-{tok}" if tok and "/" not in tok and "\\" not in tok else base
    return out_dir / f"{stem}.md", out_dir / f"{stem}.json"


def update(data: dict, new: dict, command: str) -> dict:
    """``data`` with the rows of ``new`` (a run of some of its targets) in place of its rows for
    the same targets (new targets appended), and the re-run recorded under ``updates``."""
    fresh = {run["spec"]: run for run in new["runs"]}
    runs = [fresh.pop(run["spec"], run) for run in data["runs"]]
    runs += list(fresh.values())
    record = {"command": command, "generated": new["generated"], "seconds": new["seconds"],
              "targets": [run["spec"] for run in new["runs"]], "versions": new["versions"]}
    return dict(data, runs=runs, updates=[*data.get("updates", []), record])


def row_seconds(*paths: Path) -> dict[str, float]:
    """Each row's seconds in the first of ``paths`` that holds a report (empty when none)."""
    for path in paths:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return {r["target"]: float(r.get("seconds") or 0) for r in data["runs"]}
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return {}


def shard(targets: list[str], k: int, n: int) -> list[str]:
    """The K-th of N slices of ``targets`` (1-based), round robin: targets K, K+N, K+2N...
    (the slow library rows, next to each other in the default order, spread over the shards)."""
    return list(targets)[k - 1::n]


def part_path(out_dir: Path, tokenizer: str | None, agentic: bool, k: int, n: int) -> Path:
    """``conformance[-TOKENIZER].part-K-of-N.json`` (``agentic...`` for the agentic matrix)."""
    _, js = paths(out_dir, tokenizer, agentic)
    return js.with_name(f"{js.stem}.part-{k}-of-{n}.json")


def write_part(data: dict, path: Path, command: str) -> Path:
    """A shard's partial report: its rows, marked ``partial``, with its own command, versions,
    machine and seconds (``report --merge`` renders the matrix from the parts)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(data, command=command), indent=1, default=str) + "\n",
                    encoding="utf-8")
    return path


#: what parts must agree on to be merged into one matrix
_SAME = (("profile", "profile"), ("tokenizer", "tokenizer"), ("agentic", "agentic-ness"),
         ("only", "checks (--agentic or not)"))


def merge(parts: list[tuple[str, dict]], *, order: list[str] | None = None,
          allow_missing: bool = False) -> dict:
    """One matrix from the partial reports ``parts`` (``(path, data)`` pairs, from
    ``report --shard K/N``; a full report counts as one part of its own rows).

    Rows come in ``order`` (the default target order), then in the parts' own order. Parts of
    different profiles, tokenizers or agentic-ness are refused, and so are a row two parts both
    judged and a row a part's target list expects that no part ran (unless
    ``allow_missing``); a row whose library was not installed in one part gives way to the part
    that had it. ConfigurationError, one line, for every refusal."""
    from .errors import ConfigurationError

    if not parts:
        raise ConfigurationError("--merge needs at least one part")
    first_path, first = parts[0]
    for path, data in parts[1:]:
        for key, what in _SAME:
            a = bool(first.get(key)) if key == "agentic" else first.get(key)
            b = bool(data.get(key)) if key == "agentic" else data.get(key)
            if a != b:
                raise ConfigurationError(
                    f"--merge: {path} has {what} {b!r}, {first_path} has {a!r}: parts of one "
                    "matrix share profile, tokenizer and agentic-ness")
    expected: list[str] = []
    rows: dict[str, dict] = {}
    source: dict[str, str] = {}
    for path, data in parts:
        if "runs" not in data:
            raise ConfigurationError(f"--merge: {path} is no report (no runs)")
        part = data.get("partial") or {}
        expected += [t for t in part.get("targets", [r["spec"] for r in data["runs"]])
                     if t not in expected]
        for run in data["runs"]:
            spec = run["spec"]
            have = rows.get(spec)
            if have is not None:
                if _not_installed(run):
                    continue
                if not _not_installed(have):
                    raise ConfigurationError(
                        f"--merge: row {spec!r} is in both {source[spec]} and {path} "
                        "(overlapping parts)")
            rows[spec] = run
            source[spec] = path
    missing = [t for t in expected if t not in rows]
    if missing and not allow_missing:
        raise ConfigurationError(
            f"--merge: {len(missing)} row(s) missing ({', '.join(missing[:5])}"
            f"{', ...' if len(missing) > 5 else ''}): a part was not given "
            "(--allow-missing renders the matrix without them)")
    rank = {t: i for i, t in enumerate(order or [])}
    seen = {t: i for i, t in enumerate(expected)}
    ordered = sorted(rows, key=lambda t: (rank.get(t, len(rank)), seen.get(t, len(seen))))
    common = {k: v for k, v in first.get("versions", {}).items()
              if all(d.get("versions", {}).get(k) == v for _, d in parts)}
    described = []
    for path, data in parts:
        part = data.get("partial") or {}
        described.append({"path": path, "shard": part.get("shard", "whole"),
                          "command": data.get("command", "?"),
                          "generated": data.get("generated", "?"),
                          "machine": data.get("machine", "?"),
                          "seconds": data.get("seconds", 0),
                          "versions": data.get("versions", {}),
                          "rows": [r["spec"] for r in data["runs"]
                                   if source.get(r["spec"]) == path]})
    merged = {"generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "versions": common, "profile": first.get("profile"),
              "tokenizer": first.get("tokenizer"),
              "machine": "; ".join(dict.fromkeys(d["machine"] for d in described)),
              "seconds": round(sum(float(d["seconds"] or 0) for d in described), 1),
              "runs": [rows[t] for t in ordered], "parts": described,
              **({"missing": missing} if missing else {})}
    for key in ("agentic", "only"):
        if first.get(key):
            merged[key] = first[key]
    return merged


def _part_lines(data: dict) -> list[str]:
    """The header lines of a merged matrix: each part's command, machine, seconds, rows and
    the versions where they differ from the common ones."""
    lines = []
    for p in data.get("parts", []):
        other = {k: v for k, v in p["versions"].items() if data["versions"].get(k) != v}
        lines.append(f"- Part {p['shard']}: `{p['command']}` ({p['generated']}, {p['machine']}, "
                     f"{p['seconds']} s): {len(p['rows'])} rows"
                     + ("; versions: " + ", ".join(f"{k} {v}" for k, v in other.items())
                        if other else ""))
    if data.get("missing"):
        lines.append("- Rows missing (merged with --allow-missing): "
                     + ", ".join(f"`{t}`" for t in data["missing"]))
    return lines


def write(data: dict, out_dir: Path, command: str) -> tuple[Path, Path]:
    """``conformance.{md,json}``, or ``conformance-<tokenizer>.{md,json}`` for a named
    tokenizer's matrix."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = paths(out_dir, data.get("tokenizer"), bool(data.get("agentic")))
    data = dict(data, command=command)
    js.write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")
    text = render_markdown(data, command)
    # the one-line-per-configuration summary of the library reports (issue 13)
    if (out_dir / "libraries.md").is_file() and not data.get("agentic"):
        text += "\n" + (out_dir / "libraries.md").read_text(encoding="utf-8")
    md.write_text(text, encoding="utf-8")
    return md, js
