"""``sft-conformance snapshot TARGET --out FILE``: record ids and trained positions on a corpus."""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("target", metavar="TARGET",
                        help="built-in name, module:attr or path/to/file.py:attr")
    parser.add_argument("--out", required=True, metavar="FILE", help="snapshot JSON to write")
    parser.add_argument("--corpus", metavar="JSONL",
                        help="conversations, one per line (default: the bundled corpus)")
    parser.add_argument("--tokenizer", metavar="NAME|PATH", default=None)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--allow-refusals", action="store_true",
                        help="write the snapshot even when the target refused every example "
                             "that fits --max-length (otherwise exit 2: such a baseline "
                             "records nothing)")


def run(args) -> int:
    from sft_conformance import snapshots
    from sft_conformance.cli import UsageError
    from sft_conformance.target import TargetError

    try:
        snap, refusals = snapshots.record(args.target, tokenizer=args.tokenizer,
                                          corpus=args.corpus, max_length=args.max_length)
    except (snapshots.SnapshotError, TargetError) as exc:
        raise UsageError(str(exc)) from None
    if refusals.all_fitting_refused and not args.allow_refusals:
        first = next(e["refused"] for e in snap["examples"] if e.get("refused"))
        raise UsageError(f"{args.target}: {refusals.summary()}, every one of the "
                         f"{refusals.fitting} that fit --max-length {args.max_length} included "
                         f"(first: {first}): such a snapshot records nothing; fix the target, "
                         "or pass --allow-refusals to write it anyway")
    snapshots.save(snap, args.out)
    trained = sum(sum(1 for x in e["labels"] if x != -100) for e in snap["examples"])
    print(f"wrote {args.out}: {len(snap['examples'])} examples, {trained} trained tokens, "
          f"{refusals.summary()} (target {snap['target']}, tokenizer "
          f"{snap['tokenizer']['name']})")
    return 0
