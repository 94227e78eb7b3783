"""Rademacher projection matrices reproducible from (seed, layer name), independent of torch's RNG.

Entry (a, b) of the I x d matrix for stream ``key`` is ``sign * (1/sqrt(d))`` where ``sign`` is
the lowest bit of ``splitmix64(key + row_major_index)``, mapped {0 -> +1, 1 -> -1}. ``key`` is the
first 8 bytes (little-endian) of ``sha256(f"{seed}:{layer}:{side}")``. This definition is spelled
out in docs/index-format.md so any program can regenerate the matrices bit-for-bit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
import torch

Matrix = npt.NDArray[np.float32]
Projections = Mapping[str, tuple[Matrix, Matrix]]  # layer -> (P_in (in, d1), P_out (out, d2))

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """The SplitMix64 finaliser applied to ``x + golden`` (uint64, wrapping arithmetic)."""
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def stream_key(seed: int, layer: str, side: str) -> int:
    """64-bit stream key of one projection matrix; ``side`` is ``"in"`` or ``"out"``."""
    digest = hashlib.sha256(f"{seed}:{layer}:{side}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def rademacher(key: int, rows: int, cols: int) -> Matrix:
    """(rows, cols) float32 matrix of +-1/sqrt(cols) drawn from the counter stream ``key``."""
    out = np.empty(rows * cols, dtype=np.float32)
    scale = np.float32(1.0 / np.sqrt(cols))
    chunk = 1 << 22  # bounded temporaries for large matrices
    with np.errstate(over="ignore"):
        for start in range(0, rows * cols, chunk):
            counter = np.arange(start, min(start + chunk, rows * cols), dtype=np.uint64)
            bits = _splitmix64(counter + np.uint64(key)) & np.uint64(1)
            out[start : start + len(counter)] = np.where(bits == 0, scale, -scale)
    return out.reshape(rows, cols)


def checksum(matrix: Matrix) -> str:
    """sha256 hex digest of the matrix as little-endian float32, row-major."""
    return hashlib.sha256(np.ascontiguousarray(matrix, dtype="<f4").tobytes()).hexdigest()


def layer_projections(
    seed: int, layer: str, in_dim: int, out_dim: int, d1: int, d2: int
) -> tuple[Matrix, Matrix]:
    """P_in (in_dim, d1) and P_out (out_dim, d2) of one layer."""
    return (
        rademacher(stream_key(seed, layer, "in"), in_dim, d1),
        rademacher(stream_key(seed, layer, "out"), out_dim, d2),
    )


def to_torch(matrix: Matrix, device: torch.device | str = "cpu") -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(matrix)).to(device)
