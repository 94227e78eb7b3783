"""Durable, atomic file writes and JSON reads shared by the writers and the manifest."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import IndexFormatError


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise IndexFormatError(f"{path}: not readable as JSON ({e})") from None
    if not isinstance(value, dict):
        raise IndexFormatError(f"{path}: corrupted (not a JSON object)")
    return value


def write_json(path: Path, value: Mapping[str, Any]) -> None:
    """Write JSON durably and atomically (temporary file, fsync, rename, fsync directory)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, sort_keys=True, indent=1))
    fsync_rename(tmp, path)


def fsync_rename(src: Path, dst: Path) -> None:
    """Make ``src`` durable, rename it to ``dst`` atomically, and make the rename durable."""
    with open(src, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(src, dst)
    dir_fd = os.open(dst.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
