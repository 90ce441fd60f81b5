"""How close two numbers must be, by the dtype they were computed in: a relative term and an
absolute floor, as ``torch.testing.assert_close`` has it (docs/specification.md#tolerances).

A purely relative tolerance is no tolerance where the reference is tiny: a loss gradient whose
trained tokens are already predicted with probability ~1 is ~1e-4, and ``rtol x 1e-4`` falls below
float32 rounding, so a correct loss computed in float32 (transformers' ``ForCausalLMLoss``
upcasts) would fail. Every numeric comparison of the checks (S5-S8, S7dp, S12) goes through
:func:`allowed`: ``atol + rtol x |reference|``, with the absolute term scaled to the dtype and,
for a gradient of a token mean, to the step's trained-token count (each logit's gradient is at
most ``1/N`` in magnitude, so its rounding is too).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float


#: of a loss value, by the dtype the target computed it in. The relative terms are the suite's
#: (they already held); the absolute floors are torch.testing's ``assert_close`` defaults.
LOSS = {
    torch.float64: Tolerance(1e-7, 1e-7),
    torch.float32: Tolerance(2e-5, 1e-5),
    torch.bfloat16: Tolerance(2e-2, 1e-5),
    torch.float16: Tolerance(2e-3, 1e-5),
}
DEFAULT = LOSS[torch.float32]


def tolerance(dtype) -> Tolerance:
    return LOSS.get(dtype, DEFAULT)


def allowed(dtype, reference: float, *, tokens: int = 1) -> float:
    """The largest difference from ``reference`` (a magnitude: a loss, or the largest element
    of a gradient) accepted for a value computed in ``dtype``. ``tokens``: the trained positions
    the value is a mean over (the absolute floor of a gradient shrinks with them)."""
    tol = tolerance(dtype)
    return tol.atol / max(1, int(tokens)) + tol.rtol * abs(float(reference))


def close(got: float, want: float, dtype, *, tokens: int = 1) -> bool:
    """Whether ``got`` is finite and within :func:`allowed` of ``want``."""
    import math

    return math.isfinite(got) and abs(got - want) <= allowed(dtype, want, tokens=tokens)
