"""Deterministic train/validation split by example position."""

from __future__ import annotations

import hashlib


def split_of(index: int, val_percent: int = 3, salt: str = "lorif-split-v1") -> str:
    """'val' for about ``val_percent`` % of positions (hash-based, stable), else 'train'."""
    h = int.from_bytes(hashlib.sha256(f"{salt}:{index}".encode()).digest()[:4], "little")
    return "val" if h % 100 < val_percent else "train"
