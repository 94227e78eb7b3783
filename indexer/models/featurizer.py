"""Featurizer: model + task + tracked layers + projections -> per-example projected gradients.

The same object featurizes training examples at build time and queries at serving time, so a
query's G~ is computed by exactly the code (and the same projection matrices) that built the index.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..data import Example
from ..engine import projection
from ..engine.capture import (
    GradientCapture,
    frozen_parameters,
    linear_dims,
    projection_dims,
    select_layers,
)
from ..engine.kronecker import KroneckerMoments
from ..engine.layout import TrackedLayer
from ..engine.projection import Projections
from ..errors import DataError, IndexFormatError
from .loading import resolve_device
from .tasks import Task


@dataclass
class Featurizer:
    model: nn.Module
    task: Task
    layers: list[TrackedLayer]
    seed: int
    device: torch.device
    modules: dict[str, nn.Module] = field(default_factory=dict, repr=False)
    projections: Projections = field(default_factory=dict, repr=False)
    _proj_t: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, repr=False)
    autocast: torch.dtype | None = None  # e.g. torch.bfloat16 for the model's forward pass

    @classmethod
    def create(
        cls,
        model: nn.Module,
        task: Task,
        *,
        layer_globs: list[str] | None = None,
        proj_factor: int = 16,
        d1: int = 0,
        d2: int = 0,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> Featurizer:
        """Select layers by glob, size their projections and generate the matrices."""
        dev = device if isinstance(device, torch.device) else resolve_device(device)
        chosen = select_layers(model, layer_globs or [])
        layers = []
        for name, module in chosen:
            i, o = linear_dims(module)
            p1, p2 = projection_dims(i, o, proj_factor, d1, d2)
            layers.append(TrackedLayer(name, i, o, p1, p2))
        return cls.from_layers(model, task, layers, seed=seed, device=dev)

    @classmethod
    def from_layers(
        cls,
        model: nn.Module,
        task: Task,
        layers: list[TrackedLayer],
        *,
        seed: int,
        device: torch.device,
        projections: Projections | None = None,
    ) -> Featurizer:
        """Rebuild a featurizer for known layers (e.g. those recorded in an index)."""
        modules = dict(model.named_modules())
        missing = [t.name for t in layers if t.name not in modules]
        if missing:
            raise IndexFormatError(f"the model has no layer(s) {missing[:3]} recorded in the index")
        for t in layers:
            if linear_dims(modules[t.name]) != (t.in_dim, t.out_dim):
                raise IndexFormatError(
                    f"layer {t.name} has shape {linear_dims(modules[t.name])} "
                    f"but the index recorded {(t.in_dim, t.out_dim)}"
                )
        model.to(device).eval()
        projections = projections or {
            t.name: projection.layer_projections(seed, t.name, t.in_dim, t.out_dim, t.d1, t.d2)
            for t in layers
        }
        proj_t = {
            n: (projection.to_torch(a, device), projection.to_torch(b, device))
            for n, (a, b) in projections.items()
        }
        return cls(
            model=model,
            task=task,
            layers=layers,
            seed=seed,
            device=device,
            modules={t.name: modules[t.name] for t in layers},
            projections=projections,
            _proj_t=proj_t,
        )

    def checksums(self) -> dict[str, tuple[str, str]]:
        return {
            n: (projection.checksum(a), projection.checksum(b))
            for n, (a, b) in self.projections.items()
        }

    def verify_checksums(self, recorded: Mapping[str, Sequence[str]]) -> None:
        """Raise if a regenerated projection differs from the one the index was built with."""
        mine = self.checksums()
        for name, sums in recorded.items():
            if tuple(sums) != mine.get(name):
                raise IndexFormatError(
                    f"projection checksum mismatch for layer {name}: this "
                    "process does not reproduce the index's projections"
                )

    def _capture(
        self,
        examples: list[Example],
        keep_positions: bool = False,
        moments: KroneckerMoments | None = None,
    ) -> GradientCapture:
        batch = {k: v.to(self.device) for k, v in self.task.collate(examples).items()}
        mask = self.task.position_mask(batch)
        with (
            frozen_parameters(self.model),
            torch.enable_grad(),
            GradientCapture(
                self.modules,
                self._proj_t,
                position_mask=mask,
                keep_positions=keep_positions,
                moments=moments,
            ) as cap,
        ):
            with torch.autocast(
                self.device.type, dtype=self.autocast, enabled=self.autocast is not None
            ):
                losses = self.task.loss(self.model, batch)
            if losses.requires_grad:
                losses.sum().backward()
        return cap

    def position_terms(self, example: Example) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """One example's G~ split over positions: name -> (a (T, d1), b (T, d2)) with
        G~ = a^T b; a layer called several times per forward stacks its calls along T."""
        cap = self._capture([example], keep_positions=True)
        out = {}
        for t in self.layers:
            pairs = cap.positions.get(t.name)
            if not pairs:
                raise DataError(f"layer {t.name} took no part in this example's loss")
            out[t.name] = (torch.cat([a[0] for a, _ in pairs]), torch.cat([b[0] for _, b in pairs]))
        return out

    def gradients(
        self, examples: list[Example], moments: KroneckerMoments | None = None
    ) -> dict[str, torch.Tensor]:
        """Projected per-example gradients: layer name -> (B, d1, d2) float32 on ``device``;
        ``moments``: also sum the batch's token-level K-FAC moments into it."""
        cap = self._capture(examples, moments=moments)
        out = {}
        for t in self.layers:
            g = cap.gradients.get(t.name)
            out[t.name] = (
                g if g is not None else torch.zeros(len(examples), t.d1, t.d2, device=self.device)
            )
        return out
