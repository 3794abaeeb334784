"""Model cost: parameters and FLOPs of one forward pass, as the evaluation output reports them.

FLOPs are counted by torch.utils.flop_counter (matmuls and convolutions, 2 per
multiply-add; element-wise ops and eigen-decompositions are not counted), on one input
of the given shape, in eval mode.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


@torch.no_grad()
def model_cost(model: torch.nn.Module | Callable, input_shape: tuple[int, ...],
               modules: tuple[torch.nn.Module, ...] = ()) -> dict[str, int]:
    """{'params': ..., 'flops': ...} of `model` on a zero input of `input_shape`.

    model may be any callable (e.g. a pipeline of several networks); `modules` then lists
    the networks whose parameters count (default: `model` itself).
    """
    modules = modules or (model,)
    params = sum(p.numel() for m in modules for p in m.parameters())
    x = torch.zeros(input_shape)
    with FlopCounterMode(display=False) as counter:
        model(x)
    return {"params": int(params), "flops": int(counter.get_total_flops())}
