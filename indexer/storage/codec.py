"""Storage dtypes of factor rows and the conversions between them and float32 tensors.

bf16 has no numpy or HDF5 type: it is stored as its raw 16-bit pattern (little-endian uint16),
which is the high half of the float32 with the same value.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import torch

RawRows = npt.NDArray[Any]  # rows in a storage dtype (uint16 bit patterns for bf16)
NUMPY_STORAGE: dict[str, np.dtype[Any]] = {
    "bf16": np.dtype("<u2"),
    "fp16": np.dtype("<f2"),
    "fp32": np.dtype("<f4"),
}
TORCH_STORAGE = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# host tensors that share memory with a numpy array in NUMPY_STORAGE (numpy has no bf16)
TORCH_HOST = {"bf16": torch.int16, "fp16": torch.float16, "fp32": torch.float32}


def encode_rows(values: torch.Tensor, dtype: str) -> RawRows:
    """float tensor -> numpy array in the storage dtype (round to nearest even for bf16/fp16)."""
    t = values.detach().to("cpu", TORCH_STORAGE[dtype]).contiguous()
    raw: RawRows = t.view(torch.int16).numpy() if dtype == "bf16" else t.numpy()
    return raw.view(NUMPY_STORAGE[dtype])


def decode_rows(raw: RawRows, dtype: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """numpy array in the storage dtype -> float32 tensor on ``device``."""
    if not (raw.flags.writeable and raw.flags.c_contiguous):
        raw = np.array(raw)  # read-only maps: copy once into process memory
    t = torch.from_numpy(raw)
    if dtype == "bf16":
        t = t.view(torch.int16).view(torch.bfloat16)
    return t.to(device=device).float()


def decode_into(out: npt.NDArray[np.float32], raw: RawRows, dtype: str) -> None:
    """raw rows (storage dtype) -> float32 ``out`` in place. Plain numpy on purpose: one
    thread and no OpenMP pool, so it does not fight the scorer's GEMM threads for the cores."""
    if dtype == "bf16":  # bf16 = the high 16 bits of an fp32
        bits = out.view(np.uint32)
        np.copyto(bits, raw, casting="unsafe")
        np.left_shift(bits, 16, out=bits)
    else:
        np.copyto(out, raw, casting="unsafe")
