"""Unit normalisation (as TrackStar and bergson offer for retrieval): the cosine of the two
gradients in the preconditioned space,

    s_unit(q, i) = <g_q, H^-1 g_i> / (||H^-1/2 g_q|| ||H^-1/2 g_i||),
    ||H^-1/2 g||^2 = sum_layers <g, H^-1 g>,

so that examples with large gradients (long, surprising texts) do not top every list. The
training side's norms take one streamed pass over the stored factors per damping.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from .layout import RowSource
from .scoring import Preconditioner

Progress = Callable[[int], object]


def example_norms(
    store: RowSource,
    pre: Mapping[str, Preconditioner],
    block_rows: int = 1024,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> torch.Tensor:
    """||H^-1/2 g_i|| of every stored row (N,) float32, g_i = L_i^T R_i per layer."""
    layout = store.layout
    out = torch.empty(len(store), dtype=torch.float32, device=device)
    for start, rows in store.blocks(block_rows, device):
        total = torch.zeros(rows.shape[0], dtype=torch.float64, device=rows.device)
        for i, t in enumerate(layout.layers):
            left, right = layout.unpack(rows, i)  # (B, c, d1), (B, c, d2)
            g = left.transpose(1, 2) @ right  # (B, d1, d2)
            total += (g * pre[t.name].apply(g)).sum(dim=(1, 2)).double()
        out[start : start + rows.shape[0]] = total.clamp_min(0).sqrt().float()
        if progress:
            progress(rows.shape[0])
    return out


def query_norms(grads: Mapping[str, torch.Tensor], p: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """||H^-1/2 g_q|| (Q,) from the query gradients and their preconditioned P_q = H^-1 g_q."""
    total = sum((grads[n].float() * p[n]).sum(dim=(1, 2)).double() for n in p)
    assert isinstance(total, torch.Tensor)
    return total.clamp_min(0).sqrt().float()
