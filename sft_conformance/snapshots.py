"""Mask snapshots: the CI gate for collator changes.

A snapshot records, for a fixed corpus of conversations, the input ids and the labels (canonical,
Hugging Face convention: the target of each token, or -100) that a target produces. Diffing two
snapshots shows exactly which tokens changed: a token table per changed example and a summary.
Snapshots are plain, stable JSON (sorted keys, one example per line) so that they read well in
code review.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from .alignment import IGNORE_INDEX, canonical_labels, match_documents, row_segments
from .errors import ConfigurationError
from .tables import show_token

FORMAT = "sft-conformance-snapshot"
VERSION = 1
BUNDLED_CORPUS = Path(__file__).parent / "data" / "snapshot_corpus.jsonl"


class SnapshotError(ConfigurationError, ValueError):
    """A snapshot or corpus that cannot be read or compared; the message says why."""


def load_corpus(path: str | Path | None = None) -> list[dict]:
    """Conversations of a JSONL file: one per line, ``{"messages": [...]}`` (or
    ``{"conversations": [...]}``, optionally with a ``name`` and the ``tools`` offered) or a
    bare list of messages. A
    malformed line is an error naming the file and the line. The one JSONL loader of every
    command (``snapshot --corpus``, the ``sft_snapshot`` fixture, ``bench --data``)."""
    from sft_conformance.reference import validate_conversation

    path = Path(path) if path else BUNDLED_CORPUS
    if not path.exists():
        raise SnapshotError(f"corpus {path} does not exist")
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SnapshotError(f"{path}:{lineno}: not valid JSON ({exc.msg} at column "
                                f"{exc.colno})") from None
        messages = record.get("messages", record.get("conversations")) \
            if isinstance(record, dict) else record
        if not isinstance(messages, list):
            raise SnapshotError(f"{path}:{lineno}: expected {{\"messages\": [...]}} or a list "
                                "of messages")
        tools = record.get("tools") if isinstance(record, dict) else None
        try:
            validate_conversation({"messages": messages, "tools": tools} if tools
                                  else messages, index=len(out))
        except ValueError as exc:
            raise SnapshotError(f"{path}:{lineno}: {exc}") from None
        name = record.get("name", f"line {lineno}") if isinstance(record, dict) else \
            f"line {lineno}"
        out.append({"name": name, "messages": messages, **({"tools": tools} if tools else {})})
    if not out:
        raise SnapshotError(f"corpus {path} holds no conversation")
    return out


def conversation_of(item: dict):
    """The conversation of a corpus item as targets get it: its messages, with its tools when
    it has some (``{"messages", "tools"}``)."""
    from sft_conformance.reference.conversation import join

    return join(item["messages"], item.get("tools"))


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of the vocabulary, special tokens and chat template."""
    h = hashlib.sha256()
    h.update(json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False).encode())
    h.update(str(tokenizer.chat_template).encode())
    h.update(json.dumps([tokenizer.eos_token, tokenizer.pad_token, tokenizer.bos_token]).encode())
    return h.hexdigest()[:16]


def take_snapshot(target, *, tokenizer: str | None = None, corpus: str | Path | None = None,
                  max_length: int = 512) -> dict:
    """Collate every corpus conversation alone and record its ids and canonical labels."""
    return record(target, tokenizer=tokenizer, corpus=corpus, max_length=max_length)[0]


@dataclass
class Refusals:
    """How many examples of a snapshot the target refused, and how many of those fit
    ``max_length`` (the reference builds them within it: nothing forced the refusal)."""

    total: int
    refused: int
    fitting: int
    fitting_refused: int

    def summary(self) -> str:
        return f"{self.refused} of {self.total} examples refused"

    @property
    def all_fitting_refused(self) -> bool:
        return self.fitting > 0 and self.fitting_refused == self.fitting


def record(target, *, tokenizer: str | None = None, corpus: str | Path | None = None,
           max_length: int = 512) -> tuple[dict, Refusals]:
    """:func:`take_snapshot` and the count of its refusals. The setup is validated first
    (sft_conformance.validation): the target's libraries, the tokenizer and its chat template,
    the collate signature and a probe batch, each a one-line SnapshotError or TargetError."""
    from sft_conformance.reference import build_example

    from . import validation
    from .context import validate_batch
    from .target import declared, load_target

    obj = load_target(target)
    d = declared(obj)
    if d.missing:
        raise SnapshotError(f"target {d.name!r} needs {', '.join(d.missing)} (not installed)"
                            + (f": {d.install_hint}" if d.install_hint else ""))
    tok_name = tokenizer or d.tokenizer
    try:
        tok = validation.load_tokenizer(tok_name)
    except SnapshotError:
        raise
    except ConfigurationError as exc:
        raise SnapshotError(str(exc)) from None
    conversations = load_corpus(corpus)
    validation.target_ready(obj, d, tok, max_length=max_length)
    examples, fitting, fitting_refused = [], 0, 0
    for i, item in enumerate(conversations):
        conv = conversation_of(item)
        try:
            fits = len(build_example(conv, tok).input_ids) <= max_length
        except Exception:
            fits = False  # the reference refuses it too
        fitting += fits
        try:
            out = obj.collate([conv], tok, max_length)
        except validation.PROGRAMMING_ERRORS as exc:
            raise SnapshotError(f"{corpus or 'the bundled corpus'}, example {i} "
                                f"({item['name']}): target {d.name!r}'s collate raised "
                                f"{type(exc).__name__}: {exc}: a bug of the adapter, not a "
                                "refusal") from None
        except Exception as exc:  # a refusal (e.g. an empty assistant message) is recorded
            fitting_refused += fits
            examples.append({"index": i, "name": item["name"], "input_ids": [], "labels": [],
                             "refused": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]})
            continue
        batch = validate_batch(out, d.name)
        if d.packs:
            expected = build_example(conv, tok).input_ids
            (seg,), _ = match_documents(batch, [expected])
            seg = seg or row_segments(batch, [batch["input_ids"].shape[1]])[0]
        else:
            seg = row_segments(batch, [batch["input_ids"].shape[1]])[0]
        ids = batch["input_ids"][seg.row, seg.start:seg.stop].tolist()
        labels = canonical_labels(batch, seg, labels_shifted=d.labels_shifted)
        examples.append({"index": i, "name": item["name"], "input_ids": ids, "labels": labels})
    snapshot = {"format": FORMAT, "version": VERSION, "target": d.name,
                "target_spec": target if isinstance(target, str) else d.name,
                "tokenizer": {"name": tok_name, "fingerprint": tokenizer_fingerprint(tok)},
                "max_length": max_length,
                "corpus": str(corpus) if corpus else "bundled:snapshot_corpus.jsonl",
                "examples": examples}
    refused = sum(1 for e in examples if e.get("refused"))
    return snapshot, Refusals(len(examples), refused, fitting, fitting_refused)


def dumps(snapshot: dict) -> str:
    """Stable JSON: header keys sorted, one example per line."""
    head = {k: v for k, v in snapshot.items() if k != "examples"}
    lines = [json.dumps(e, ensure_ascii=False, sort_keys=True) for e in snapshot["examples"]]
    body = json.dumps(head, ensure_ascii=False, sort_keys=True, indent=1)[:-2]
    return body + ',\n "examples": [\n  ' + ",\n  ".join(lines) + "\n ]\n}\n"


def save(snapshot: dict, path: str | Path) -> None:
    Path(path).write_text(dumps(snapshot), encoding="utf-8")


def load(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SnapshotError(f"snapshot {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise SnapshotError(f"{path}: not a JSON snapshot ({exc.msg}, line {exc.lineno})") \
            from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SnapshotError(f"{path}: not an sft-conformance snapshot (no format "
                            f"{FORMAT!r})")
    if data.get("version") != VERSION:
        raise SnapshotError(f"{path}: snapshot format version {data.get('version')!r}, this "
                            f"sft-conformance reads version {VERSION}: re-record it with "
                            "'sft-conformance snapshot'")
    return data


@dataclass
class SnapshotDiff:
    changed: list[dict] = field(default_factory=list)
    newly_trained: int = 0
    no_longer_trained: int = 0
    ids_changed: int = 0
    refusals_changed: int = 0
    total: int = 0

    @property
    def clean(self) -> bool:
        return not self.changed


def diff(old: dict, new: dict) -> SnapshotDiff:
    """Compare two snapshots example by example (SnapshotError if they are not comparable)."""
    if old["tokenizer"]["fingerprint"] != new["tokenizer"]["fingerprint"]:
        raise SnapshotError(
            f"the snapshots were made with different tokenizers ({old['tokenizer']['name']} "
            f"{old['tokenizer']['fingerprint']} vs {new['tokenizer']['name']} "
            f"{new['tokenizer']['fingerprint']}): token positions are not comparable")
    if len(old["examples"]) != len(new["examples"]) or old["corpus"] != new["corpus"]:
        raise SnapshotError(f"the snapshots cover different corpora ({old['corpus']}, "
                            f"{len(old['examples'])} examples vs {new['corpus']}, "
                            f"{len(new['examples'])})")
    result = SnapshotDiff(total=len(old["examples"]))
    for a, b in zip(old["examples"], new["examples"]):
        if a.get("refused") != b.get("refused"):
            result.refusals_changed += 1
            result.changed.append({"index": a["index"], "name": a["name"], "kind": "refusal",
                                   "old": a, "new": b})
            continue
        if a["input_ids"] != b["input_ids"]:
            result.ids_changed += 1
            result.changed.append({"index": a["index"], "name": a["name"], "kind": "input_ids",
                                   "old": a, "new": b})
            continue
        rows = [t for t in range(len(a["labels"])) if a["labels"][t] != b["labels"][t]]
        if rows:
            for t in rows:
                if a["labels"][t] == IGNORE_INDEX:
                    result.newly_trained += 1
                elif b["labels"][t] == IGNORE_INDEX:
                    result.no_longer_trained += 1
            result.changed.append({"index": a["index"], "name": a["name"], "kind": "labels",
                                   "positions": rows, "old": a, "new": b})
    return result


def render_diff(result: SnapshotDiff, tokenizer=None, *, context: int = 2) -> str:
    """Token tables of what changed, then the summary."""
    from tabulate import tabulate

    out = []
    for ch in result.changed:
        a, b = ch["old"], ch["new"]
        if ch["kind"] == "refusal":
            what = ("now refused: " + b["refused"] if not a.get("refused") else
                    "no longer refused (was: " + a["refused"] + ")" if not b.get("refused") else
                    f"refused differently: {a['refused']} -> {b['refused']}")
            out.append(f"example {ch['index']} ({ch['name']}): the target's collate {what}")
            continue
        if ch["kind"] == "input_ids":
            out.append(f"example {ch['index']} ({ch['name']}): input ids changed "
                       f"({len(a['input_ids'])} -> {len(b['input_ids'])} tokens)")
            continue
        shown = sorted({k for t in ch["positions"]
                        for k in range(max(0, t - context), min(len(a["labels"]),
                                                                t + context + 1))})
        rows = [[">>" if t in ch["positions"] else "", t,
                 show_token(tokenizer, a["input_ids"][t]), a["input_ids"][t], a["labels"][t],
                 b["labels"][t],
                 ("newly trained" if a["labels"][t] == IGNORE_INDEX else
                  "no longer trained" if b["labels"][t] == IGNORE_INDEX else "label value")
                 if t in ch["positions"] else ""] for t in shown]
        out.append(f"example {ch['index']} ({ch['name']}): {len(ch['positions'])} label(s) "
                   "changed\n" + tabulate(rows, headers=["", "pos", "token", "input_id",
                                                          "old label", "new label", "change"],
                                          tablefmt="github"))
    out.append(f"summary: {len(result.changed)} of {result.total} examples changed; "
               f"{result.newly_trained} token(s) newly trained, {result.no_longer_trained} no "
               f"longer trained, {result.ids_changed} example(s) with changed input ids, "
               f"{result.refusals_changed} example(s) refused or accepted anew")
    return "\n\n".join(out)
