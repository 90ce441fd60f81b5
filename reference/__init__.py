"""The reference SFT implementation, installed as ``sft_conformance.reference``: the
specification (docs/specification.md, S1-S15) in code.

* :mod:`.loss`: masked, shifted cross-entropy, token mean over the batch (S6).
* :mod:`.oracle`: the same loss in plain Python, the mean of a filtered list.
* :mod:`.masks`: input ids and trained positions from a chat template (S1-S4, S10, S11).
* :mod:`.collate`: labels, truncation (S9), right/left padding (S5).
* :mod:`.packing`: best-fit-decreasing packing, document isolation (S8).
* :mod:`.accumulation`: gradient accumulation with the step denominator (S7).
"""

from .accumulation import accumulate_gradients, forward, step_denominator
from .collate import (
    OVERLONG_POLICIES,
    Collator,
    DroppedExampleWarning,
    collate,
    labels_for,
    pad_examples,
    truncate,
)
from .errors import (
    ConversationError,
    NoTrainedPositionError,
    OverlongError,
    SFTInputError,
    TemplateError,
    TokenizerError,
)
from .loss import IGNORE_INDEX, EmptyTargetWarning, count_trained, per_token_nll, sft_loss
from .masks import Example, TurnSpan, build_example, prompt_ids, render, validate_conversation
from .oracle import oracle_loss, token_losses
from .packing import (
    best_fit_decreasing,
    block_causal_mask,
    document_ids_from_positions,
    pack_examples,
)

__all__ = [
    "IGNORE_INDEX", "OVERLONG_POLICIES", "Collator", "ConversationError", "DroppedExampleWarning",
    "EmptyTargetWarning", "Example", "NoTrainedPositionError", "OverlongError", "SFTInputError",
    "TemplateError", "TokenizerError", "TurnSpan", "accumulate_gradients", "best_fit_decreasing",
    "block_causal_mask", "build_example", "collate", "count_trained", "document_ids_from_positions",
    "forward", "labels_for", "oracle_loss", "pack_examples", "pad_examples", "per_token_nll",
    "prompt_ids", "render", "sft_loss", "step_denominator", "token_losses", "truncate",
    "validate_conversation",
]
