"""Per-example projected gradients of Linear / Conv1D layers, captured with hooks.

For a tracked layer y = W x with inputs X (B, T, I) and output gradients dY (B, T, O) the
projected per-example gradient is  G~_b = (X_b P_in)^T (dY_b P_out)  in R^{d1 x d2}.
The forward hook keeps X P_in (B, T, d1); a tensor hook on the output receives dY and forms
G~ with one batched matmul. The weight gradient dY^T X is never built: parameters are frozen
while capturing, and only the tracked outputs are made to require grad.
"""

from __future__ import annotations

import contextlib
import fnmatch
import re
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .kronecker import KroneckerMoments

Conv1D: type[nn.Module] | None
try:  # HF GPT-2 style layer: y = x @ W + b with W of shape (in, out)
    from transformers.pytorch_utils import Conv1D
except ImportError:  # pragma: no cover - transformers is a dependency, but keep capture usable
    Conv1D = None

_DEFAULT_EXCLUDE = re.compile(r"(^|\.)(lm_head|embed\w*|wte|wpe|score|classifier)(\.|$)")
Hook = Callable[[nn.Module, tuple[Any, ...], torch.Tensor], torch.Tensor]


def is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or (Conv1D is not None and isinstance(module, Conv1D))


def linear_dims(module: nn.Module) -> tuple[int, int]:
    """(in_dim, out_dim) of an nn.Linear or HF Conv1D."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    in_dim, out_dim = weight.shape  # Conv1D stores W as (in, out)
    return int(in_dim), int(out_dim)


def select_layers(model: nn.Module, globs: list[str]) -> list[tuple[str, nn.Module]]:
    """Linear/Conv1D modules whose qualified name matches any glob, in module order.

    Without globs: every linear layer inside a repeated block (a name with a numeric component,
    e.g. ``model.layers.3.mlp.up_proj`` or ``0`` of an ``nn.Sequential``), excluding embeddings
    and output heads.
    """
    linears = [(n, m) for n, m in model.named_modules() if n and is_linear(m)]
    if globs:
        chosen = [(n, m) for n, m in linears if any(fnmatch.fnmatchcase(n, g) for g in globs)]
        if not chosen:
            sample = ", ".join(n for n, _ in linears[:6])
            raise ConfigError(
                f"layer globs {globs} match no Linear/Conv1D layer "
                f"(the model has {len(linears)}, e.g. {sample})"
            )
        return chosen
    chosen = [
        (n, m)
        for n, m in linears
        if any(part.isdigit() for part in n.split(".")) and not _DEFAULT_EXCLUDE.search(n)
    ]
    if not chosen:
        raise ConfigError("the model has no linear layer inside repeated blocks; pass --layers")
    return chosen


def projection_dims(in_dim: int, out_dim: int, f: int, d1: int = 0, d2: int = 0) -> tuple[int, int]:
    """d1 = in_dim // f and d2 = out_dim // f unless given explicitly; explicit sizes are capped
    at the layer's own dims (a projection never enlarges); each at least 1."""
    p1 = min(d1, in_dim) if d1 else max(1, in_dim // f)
    p2 = min(d2, out_dim) if d2 else max(1, out_dim // f)
    return p1, p2


class GradientCapture:
    """Context manager that records G~ (B, d1, d2) per tracked layer for one backward pass.

    Usage::

        with GradientCapture(modules, projections, position_mask=mask) as cap:
            loss_fn(model, batch).sum().backward()
        grads = cap.gradients  # name -> (B, d1, d2) float32
    """

    def __init__(
        self,
        modules: dict[str, nn.Module],
        projections: dict[str, tuple[torch.Tensor, torch.Tensor]],
        position_mask: torch.Tensor | None = None,
        keep_positions: bool = False,
        moments: KroneckerMoments | None = None,
    ):
        self.modules = modules
        self.moments = moments  # when given: token-level A and S summed in (K-FAC / EK-FAC)
        self.projections = projections
        self.position_mask = position_mask  # (B, T) bool: True = real token
        self.gradients: dict[str, torch.Tensor] = {}
        # keep_positions: also the per-position terms, G~ = sum_t a_t b_t^T over
        # positions[name] = [(a (B, T, d1), b (B, T, d2)), ...] (one pair per call of the module)
        self.keep_positions = keep_positions
        self.positions: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> GradientCapture:
        for name, module in self.modules.items():
            handle = module.register_forward_hook(self._forward_hook(name))
            self._handles.append(handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _mask(self, t: torch.Tensor) -> torch.Tensor:
        m = self.position_mask
        if m is not None and t.dim() == 3 and t.shape[:2] == m.shape:
            return torch.where(m.unsqueeze(-1), t, torch.zeros((), dtype=t.dtype, device=t.device))
        return t

    def _forward_hook(self, name: str) -> Hook:
        p_in, p_out = self.projections[name]

        def hook(module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
            x = inputs[0]
            x = x.reshape(x.shape[0], -1, x.shape[-1])  # (B, T, I); T = 1 for 2-D inputs
            # float32 even under the model's autocast (bf16 forward): the capture math is not
            # the model's, and the backward hook below runs outside any autocast region
            with torch.autocast(x.device.type, enabled=False):
                xp = self._mask(x.detach().float() @ p_in)  # (B, T, d1)
            if not output.requires_grad:
                output = output.detach().requires_grad_(True)

            def on_grad(grad: torch.Tensor) -> None:
                g = grad.reshape(grad.shape[0], -1, grad.shape[-1])
                gp = self._mask(g.float() @ p_out)  # (B, T, d2)
                g_tilde = xp.transpose(1, 2) @ gp  # (B, d1, d2)
                if self.keep_positions:
                    self.positions.setdefault(name, []).append((xp, gp))
                if self.moments is not None:
                    self.moments.add(name, xp, gp)
                prev = self.gradients.get(name)
                self.gradients[name] = g_tilde if prev is None else prev + g_tilde

            output.register_hook(on_grad)  # type: ignore[no-untyped-call]
            return output

        return hook


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """No parameter of ``model`` requires grad inside (restored on exit)."""
    was = [p for p in model.parameters() if p.requires_grad]
    for p in was:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in was:
            p.requires_grad_(True)
