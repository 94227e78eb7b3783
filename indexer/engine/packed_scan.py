"""Scoring rows packed per shape group, and which kernel does it.

A pack is one shape group's rows: L (G, N, c, d1) and R (G, N, c, d2) in the storage dtype
(resident rows are kept that way, ``storage/packed.py``; a streamed block is packed on the
device). ``LORIF_KERNEL`` chooses, once per process: ``triton`` (the fused kernel,
``triton_scan.py``: on CUDA, or on CPU under ``TRITON_INTERPRET=1``), ``torch`` (batched GEMMs
per group, any device), ``auto`` (triton where it can run, else torch). Same scores either
way (tested against each other).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Sequence
from typing import Literal

import torch

from ..errors import ConfigError
from .kernels import LayerGroup, LowRankQueries
from .layout import FactorLayout

Kernel = Literal["triton", "torch"]
Pack = tuple[LayerGroup, torch.Tensor, torch.Tensor]
KERNELS = ("auto", "triton", "torch")
log = logging.getLogger("lorif")
_failed: list[str] = []  # why the Triton kernel failed here under ``auto`` (then: torch)


@functools.cache
def triton_importable() -> bool:
    try:
        from . import triton_scan  # noqa: F401 - only whether it imports
    except ImportError:
        return False
    return True


def scan_kernel(device: torch.device) -> Kernel:
    """The exact scan's kernel on ``device`` as ``LORIF_KERNEL`` says (ConfigError when it
    names one that cannot run here)."""
    choice = os.environ.get("LORIF_KERNEL", "auto")
    if choice not in KERNELS:
        raise ConfigError(f"LORIF_KERNEL must be one of {', '.join(KERNELS)}, not {choice!r}")
    runs = (device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1") and (
        choice != "torch" and (choice == "triton" or not _failed) and triton_importable()
    )
    if choice == "triton" and not runs:
        raise ConfigError(
            "LORIF_KERNEL=triton needs the triton package and a CUDA device (or "
            "TRITON_INTERPRET=1 on CPU); install the gpu extra or use LORIF_KERNEL=torch"
        )
    return "triton" if runs else "torch"


def pack_block(
    layout: FactorLayout, groups: Sequence[LayerGroup], rows: torch.Tensor
) -> list[Pack]:
    """Decoded rows (b, width) -> one pack per group (copies)."""
    b, out = rows.shape[0], []
    for g in groups:
        left, right = g.gather(rows)  # (n, b*c, d1), (n, b*c, d2)
        shape = (len(g.layers), b, g.c)
        out.append((g, left.view(*shape, g.d1), right.view(*shape, g.d2)))
    return out


def stacked_queries(groups: Sequence[LayerGroup], p: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """P per group: (G, Q, d1, d2) float32, the group's layers in order."""
    return [torch.stack([p[t.name].float() for t in g.layers]) for g in groups]


def score_packs(
    packs: Sequence[Pack], pg: Sequence[torch.Tensor], nq: int, kernel: Kernel
) -> torch.Tensor:
    """Exact scores (Q, b) of the packs' rows; ``pg``: ``stacked_queries`` of their groups."""
    b = packs[0][1].shape[1] if packs else 0
    device = packs[0][1].device if packs else torch.device("cpu")
    out = torch.zeros(nq, b, device=device)
    for (g, left, right), p in zip(packs, pg, strict=True):
        if kernel == "triton" and _triton(_exact, left, right, p, out):
            continue
        n, _, c, d1 = left.shape
        pt = p.permute(0, 3, 1, 2).reshape(n, g.d2, nq * d1)  # (G, d2, Q*d1)
        pr = torch.bmm(right.reshape(n, b * c, g.d2).float(), pt)  # (G, b*c, Q*d1)
        prod = pr.view(n, b, c, nq, d1) * left.float().view(n, b, c, 1, d1)
        out += prod.sum(dim=(0, 2, 4)).T
    return out


def score_packs_lowrank(
    packs: Sequence[Pack], lr: LowRankQueries, kernel: Kernel = "torch"
) -> torch.Tensor:
    """Approximate scores (Q, b) with rank-``lr.rank`` queries (``kernels.score_rows_lowrank``)."""
    nq = lr.n_queries
    b = packs[0][1].shape[1] if packs else 0
    device = packs[0][1].device if packs else torch.device("cpu")
    out = torch.zeros(nq, b, device=device)
    for g, left, right in packs:
        n, _, c, _ = left.shape
        a = torch.stack([lr.left[t.name] for t in g.layers])  # (G, d1, Q*k)
        bb = torch.stack([lr.right[t.name] for t in g.layers])  # (G, d2, Q*k)
        if kernel == "triton" and _triton(_lowrank, left, right, a, bb, out):
            continue
        la = torch.bmm(left.reshape(n, b * c, g.d1).float(), a)
        la.mul_(torch.bmm(right.reshape(n, b * c, g.d2).float(), bb))
        out += la.view(n, b, c, nq, -1).sum(dim=(0, 2, 4)).T
    return out


def _exact(left: torch.Tensor, right: torch.Tensor, p: torch.Tensor, out: torch.Tensor) -> None:
    from .triton_scan import score_group

    score_group(left, right, p, out)


def _lowrank(
    left: torch.Tensor, right: torch.Tensor, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor
) -> None:
    from .triton_scan import score_group_lowrank

    score_group_lowrank(left, right, a.float(), b.float(), out)


def _triton(call: Callable[..., None], *args: torch.Tensor) -> bool:
    """Run a Triton kernel; under ``LORIF_KERNEL=auto`` a kernel that fails here (it does not
    compile for this card, say) is said once in the log and the torch path takes over (False)
    for the life of the process; with ``triton`` chosen explicitly the error is raised."""
    if _failed:
        return False
    try:
        call(*args)  # adds to ``out`` only once the kernel is done
        return True
    except Exception as e:
        if os.environ.get("LORIF_KERNEL", "auto") == "triton":
            raise
        _failed.append(f"{type(e).__name__}: {e}")
        log.error("the Triton scan kernel failed (%s); scanning with torch", _failed[0])
        return False
