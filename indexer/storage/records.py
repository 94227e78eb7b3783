"""JSON objects with typed fields (the manifest's records): known keys are fields (None =
absent), unknown ones are kept in ``extra`` and written back, so a record read and written
again is the same JSON."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..errors import IndexFormatError

R = TypeVar("R", bound="Record")


@dataclass
class Record:
    """A JSON object with known keys (the fields; None = absent) and unknown ones kept."""

    extra: dict[str, Any] = field(default_factory=dict, kw_only=True)

    @classmethod
    def from_dict(cls: type[R], d: Mapping[str, Any], where: str = "manifest") -> R:
        if not isinstance(d, Mapping):
            raise IndexFormatError(f"corrupted {where} (not a JSON object)")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.name in names and f.name not in d and _required(f)
        ]
        if missing:
            raise IndexFormatError(f"corrupted {where} (no '{missing[0]}')")
        known = {k: cls._decode(k, v) for k, v in d.items() if k in names}
        return cls(**known, extra={k: v for k, v in d.items() if k not in names})

    @classmethod
    def _decode(cls, key: str, value: Any) -> Any:
        return value

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.extra)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name != "extra" and value is not None:
                out[f.name] = _encode(value)
        return out


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _encode(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, list):
        return [_encode(v) for v in value]
    return value
