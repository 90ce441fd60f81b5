"""``sft-conformance diff OLD NEW [--accept]``: what changed between two mask snapshots.

Exit 1 on any change, 0 when identical or when the change is accepted (``--accept`` rewrites
OLD with NEW), 2 when the snapshots cannot be compared."""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("old", metavar="OLD", help="the accepted snapshot")
    parser.add_argument("new", metavar="NEW", help="the snapshot of the changed code")
    parser.add_argument("--accept", action="store_true",
                        help="accept the change: rewrite OLD with NEW and exit 0")


def run(args) -> int:
    import shutil

    from sft_conformance import snapshots
    from sft_conformance.cli import UsageError

    try:
        old, new = snapshots.load(args.old), snapshots.load(args.new)
        result = snapshots.diff(old, new)
    except snapshots.SnapshotError as exc:
        raise UsageError(str(exc)) from None
    tokenizer = None
    try:
        from sft_conformance.assets import load_tokenizer

        tokenizer = load_tokenizer(old["tokenizer"]["name"])
    except Exception:  # a user's tokenizer path that is gone: print ids only
        pass
    print(snapshots.render_diff(result, tokenizer))
    if result.clean:
        return 0
    if args.accept:
        shutil.copyfile(args.new, args.old)
        print(f"accepted: {args.old} rewritten from {args.new}")
        return 0
    print("the trained tokens changed: review the tables above, then re-run with --accept "
          "to record the new masks")
    return 1
