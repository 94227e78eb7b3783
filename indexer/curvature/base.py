"""What a curvature method is: the interface every registered kind implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import h5py
import numpy as np
import numpy.typing as npt
import torch

from ..engine.kronecker import KroneckerMoments
from ..engine.layout import RowSource, TrackedLayer
from ..engine.scoring import Preconditioner
from . import method

if TYPE_CHECKING:
    from ..config import BuildConfig, CurvatureConfig

Progress = Callable[[int], object]  # rows just processed
Combine = Callable[[torch.Tensor], object]  # sums a tensor in place over a build's processes


class LayerBasis(Protocol):
    """One layer's stored curvature: its arrays (as the basis file holds them) and the
    build's damping ``lam``."""

    lam: float

    def arrays(self) -> dict[str, npt.NDArray[Any]]: ...


class Basis(dict[str, Any]):
    """Every layer's basis by layer name (``LayerBasis``), and the ``kind`` it is of."""

    def __init__(self, kind: str, layers: Mapping[str, LayerBasis]):
        super().__init__(layers)
        self.kind = kind

    @property
    def method(self) -> CurvatureMethod:
        return method(self.kind)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Basis, (self.kind, dict(self)))


class CurvatureMethod(ABC):
    """One preconditioner kind (see the package docstring)."""

    kind: ClassVar[str]
    arrays: ClassVar[tuple[str, ...]]  # the datasets of curvature/<layer> in the basis file
    needs_moments: ClassVar[bool] = False  # the featurizer sums K-FAC moments per shard

    def validate(self, cfg: BuildConfig) -> None:  # noqa: B027 - most methods take any
        """ConfigError (one line) for build settings this method cannot work with."""

    def passes(self, cfg: CurvatureConfig) -> int:
        """Passes over the stored rows the build makes (for its progress bar)."""
        return 0

    @abstractmethod
    def compute(
        self,
        store: RowSource,
        cfg: BuildConfig,
        device: torch.device,
        progress: Progress | None = None,
        combine: Combine | None = None,
        moments: Callable[[], KroneckerMoments] | None = None,
    ) -> Basis:
        """Every layer's basis over the rows of ``store`` (``combine``: summed over the
        processes of a distributed build; ``moments``: the rows' K-FAC moments, when
        ``needs_moments``)."""

    @abstractmethod
    def from_arrays(self, arrays: Mapping[str, npt.NDArray[Any]], lam: float) -> LayerBasis:
        """A layer's basis from its stored arrays."""

    @abstractmethod
    def preconditioner(
        self, layer: Any, device: torch.device | str = "cpu", lam: float | None = None
    ) -> Preconditioner:
        """H^-1 of one layer at the build's lambda, or ``lam`` (no basis depends on it)."""

    @abstractmethod
    def eigenvalues(self, layer: Any) -> npt.NDArray[Any]:
        """The layer's curvature eigenvalues (what must be >= 0)."""

    @abstractmethod
    def basis_bytes(self, layer: TrackedLayer, rank: int) -> int:
        """Bytes of one layer's stored basis (held in memory, on the device, to score);
        ``rank``: the r the build asked for (``--curvature-rank``)."""

    def describe(self, rank: int) -> str:
        """The method in a few words (``lorif index info``)."""
        return self.kind

    def memory_bytes(self, layers: Sequence[TrackedLayer], rank: int) -> int:
        """Bytes of the whole basis of ``layers`` (``rank``: as in ``basis_bytes``)."""
        return sum(self.basis_bytes(t, rank) for t in layers)

    def check(self, layer: LayerBasis) -> bool:
        """Finite arrays, non-negative eigenvalues and lambda > 0 (what a reader checks)."""
        return bool(
            all(np.isfinite(a).all() for a in layer.arrays().values())
            and (self.eigenvalues(layer) >= 0).all()
            and np.isfinite(layer.lam)
            and layer.lam > 0
        )

    def write(self, group: h5py.Group, layer: LayerBasis) -> None:
        """The layer's arrays as datasets of ``group`` and the build's lambda as an attribute."""
        for key, array in layer.arrays().items():
            group.create_dataset(key, data=array)
        group.attrs["lambda"] = float(layer.lam)

    def read(self, group: h5py.Group | None) -> LayerBasis | None:
        """The layer stored in ``group``; None when it is missing or incomplete."""
        if group is None or any(k not in group for k in self.arrays) or "lambda" not in group.attrs:
            return None
        return self.from_arrays(
            {k: group[k][()] for k in self.arrays}, float(group.attrs["lambda"])
        )
