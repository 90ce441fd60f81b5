"""``sft-conformance snapshot TARGET --out FILE``: record ids and trained positions on a corpus."""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("target", metavar="TARGET", help="built-in name or module:attr")
    parser.add_argument("--out", required=True, metavar="FILE", help="snapshot JSON to write")
    parser.add_argument("--corpus", metavar="JSONL",
                        help="conversations, one per line (default: the bundled corpus)")
    parser.add_argument("--tokenizer", metavar="NAME|PATH", default=None)
    parser.add_argument("--max-length", type=int, default=512)


def run(args) -> int:
    from sft_conformance import snapshots
    from sft_conformance.cli import UsageError
    from sft_conformance.target import TargetError

    try:
        snap = snapshots.take_snapshot(args.target, tokenizer=args.tokenizer,
                                       corpus=args.corpus, max_length=args.max_length)
    except (snapshots.SnapshotError, TargetError) as exc:
        raise UsageError(str(exc)) from None
    snapshots.save(snap, args.out)
    trained = sum(sum(1 for x in e["labels"] if x != -100) for e in snap["examples"])
    print(f"wrote {args.out}: {len(snap['examples'])} examples, {trained} trained tokens "
          f"(target {snap['target']}, tokenizer {snap['tokenizer']['name']})")
    return 0
