"""``sft-conformance demo``: the reference's masks and loss for a bundled example."""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("--tokenizer", default="chatml", help="bundled template name or path")
    parser.add_argument("--shifted", action="store_true", help="print shifted labels")


def run(args) -> int:
    import torch

    from sft_conformance.assets import load_tokenizer, tiny_model
    from sft_conformance.cli import UsageError
    from sft_conformance.reference import collate, forward, sft_loss
    from sft_conformance.tables import token_table

    try:
        tok = load_tokenizer(args.tokenizer)
    except (ValueError, OSError) as exc:
        raise UsageError(f"--tokenizer: {exc}") from None
    conv = [{"role": "user", "content": "Explain gravity"},
            {"role": "assistant", "content": "Gravity is a force"}]
    if args.tokenizer == "seed001":
        conv = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "olleh"}]
    batch = collate([conv], tok, 256, labels_shifted=args.shifted)
    print(f"conversation: {conv}\ntokenizer: {tok.name_or_path}\n")
    print(token_table(tok, batch["input_ids"][0], batch["labels"][0]))
    with torch.no_grad():
        loss = sft_loss(forward(tiny_model(tok), batch), batch["labels"],
                        labels_shifted=args.shifted)
    print(f"\nloss of the untrained tiny model (token mean over trained positions): {loss:.4f}")
    return 0
