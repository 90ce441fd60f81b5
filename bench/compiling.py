"""``--compile``: the model and the loss under ``torch.compile``, and the optimizer of the step.

:class:`CompiledModel` stands in for the model in the training steps: calling it runs the
compiled model (logits), ``get_decoder()`` the compiled decoder (hidden states, for the chunked
and fused losses); parameters and modules are the model's own, so the optimizer, the parity pass
and the isolation check (which run the plain model) see the same weights. Shapes change from
batch to batch in the dynamic layouts; ``torch.compile``'s default (``dynamic=None``) recompiles
once with dynamic shapes after the first change. The compile time falls in the warm-up steps
and in the first timed epoch's first steps of a new shape; the report says compile was on.

The optimizer is AdamW with ``fused=True`` on CUDA (one kernel for all parameters) and
``foreach=True`` elsewhere (the multi-tensor path; PyTorch's fused AdamW also exists for CPU but
the foreach path is the one the issue asks for and the one torch picks by default there).
"""

from __future__ import annotations

import torch


class CompiledModel:
    """A causal LM whose forward and decoder run compiled; everything else is the model's."""

    def __init__(self, model, backend: str = "inductor", dynamic: bool | None = None):
        self.model = model
        self.backend = backend
        self._full = torch.compile(model, backend=backend, dynamic=dynamic)
        self._decoder = torch.compile(model.get_decoder(), backend=backend, dynamic=dynamic)

    def __call__(self, *args, **kwargs):
        return self._full(*args, **kwargs)

    def get_decoder(self):
        return self._decoder

    def parameters(self, *args, **kwargs):
        return self.model.parameters(*args, **kwargs)

    def __getattr__(self, name):  # config, get_output_embeddings, ...
        return getattr(self.model, name)


def compile_loss(loss, backend: str = "inductor"):
    """The step loss under ``torch.compile`` (same signature)."""
    return torch.compile(loss, backend=backend)


def optimizer_name(device: str) -> str:
    return "AdamW (fused=True)" if torch.device(device).type == "cuda" else "AdamW (foreach=True)"


def make_optimizer(model, lr: float, device: str):
    """AdamW, fused on CUDA and foreach elsewhere; returns ``(optimizer, description)``."""
    params = [p for p in model.parameters() if p.requires_grad]
    if torch.device(device).type == "cuda":
        return torch.optim.AdamW(params, lr=lr, fused=True), optimizer_name(device)
    return torch.optim.AdamW(params, lr=lr, foreach=True), optimizer_name(device)
