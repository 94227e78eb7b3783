"""Curvature methods: the preconditioner kinds an index can be built with, registered by name.

Each kind is one class (``base.CurvatureMethod``) that owns everything about it: what the
build must collect (token-level moments, passes over the rows), how its per-layer basis is
computed, written to and read from the basis file and checked, its preconditioner H^-1, its
memory and its validation. ``--curvature KIND`` names one of ``KINDS``.

A new kind is one module with a ``CurvatureMethod`` subclass and one line in ``REGISTRY``
(docs/architecture.md shows one). The table names classes by module so that reading it (the
CLI's flag choices, config validation) imports no torch; ``method`` loads the class.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    from .base import CurvatureMethod

REGISTRY: dict[str, str] = {
    "lowrank": "indexer.curvature.lowrank:LowRank",
    "kfac": "indexer.curvature.kronecker:KFAC",
    "ekfac": "indexer.curvature.kronecker:EKFAC",
}
KINDS = REGISTRY.keys()  # a live view: a kind registered later is a choice too
DEFAULT_KIND = "lowrank"  # also the kind of indexes written before the manifest named one


def register(kind: str, target: str) -> None:
    """Register ``target`` ("module:Class") as ``kind`` at run time (a plug-in; the built-in
    kinds are the lines of ``REGISTRY``)."""
    REGISTRY[kind] = target
    method.cache_clear()


@cache
def method(kind: str) -> CurvatureMethod:
    """The method registered as ``kind`` (ConfigError naming the known kinds otherwise)."""
    if kind not in REGISTRY:
        raise ConfigError(f"unknown curvature kind {kind!r} (known: {', '.join(KINDS)})")
    module, name = REGISTRY[kind].split(":")
    instance: CurvatureMethod = getattr(importlib.import_module(module), name)()
    return instance
