"""Divergence checks: which loss component or which tensor of a model went non-finite, as one line for an error.

The module stops a run at the first sign (a non-finite training or evaluation loss, a non-finite parameter or
BatchNorm statistic before validation or in a checkpoint being saved) with a ``FloatingPointError`` naming it, so a
diverged model is never validated as if it were fine nor written over the last good checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

__all__ = ["DIVERGED", "HINT", "first_nonfinite_tensor", "nonfinite_losses"]

#: What to try, appended to every divergence error.
HINT = "lower the learning rate, check the data or use fp32 precision"

#: The verdict and the hint, for errors about the model itself.
DIVERGED = f"the model has diverged: {HINT}"


def nonfinite_losses(losses: Mapping[str, torch.Tensor]) -> str | None:
    """``"component(s) ['box'] = [nan]"`` for the non-finite entries of a loss dict (scalars), else ``None``."""
    bad = [k for k, v in losses.items() if not bool(torch.isfinite(v).all())]
    return f"component(s) {bad} = {[float(losses[k]) for k in bad]}" if bad else None


@torch.no_grad()
def first_nonfinite_tensor(items: torch.nn.Module | Iterable[tuple[str, Any]]) -> str | None:
    """``"<name> has N nan/inf values (largest finite |value| X)"`` for the first floating-point tensor of a module
    (its parameters, then its buffers: BatchNorm statistics included) or of ``(name, value)`` pairs (a
    ``state_dict``'s items) holding a non-finite value, else ``None``. Values that are not floating-point tensors are
    skipped."""
    if isinstance(items, torch.nn.Module):
        items = [*items.named_parameters(), *items.named_buffers()]
    for name, value in items:
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            continue
        finite = torch.isfinite(value)
        if not bool(finite.all()):
            biggest = float(value[finite].abs().max()) if bool(finite.any()) else float("nan")
            return f"{name} has {int((~finite).sum())} nan/inf values (largest finite |value| {biggest:.3g})"
    return None
