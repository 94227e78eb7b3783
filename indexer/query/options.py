"""How a query is answered: ``QueryOptions``, validated once where a request enters (the HTTP
model, the CLI's flags and the Python API all build one) and made canonical for an index by
``QueryOptions.for_index``; the engine, the scorer process and the cache key take it as it is.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Literal

from ..config import checked_damping
from ..errors import ConfigError
from ..storage.manifest import CurvatureRecord

Direction = Literal["proponents", "opponents", "both"]
Normalize = Literal["none", "unit"]
DIRECTIONS: tuple[Direction, ...] = ("proponents", "opponents", "both")
NORMALIZE: tuple[Normalize, ...] = ("none", "unit")
MAX_KEY = 100  # characters of a metadata key


@dataclass(frozen=True)
class QueryOptions:
    """One query's options; every field is checked when the object is made (ConfigError)."""

    k: int = 10  # results per direction
    direction: Direction = "proponents"
    damping: float | None = None  # relative alpha; None = the index build's
    normalize: Normalize = "none"  # unit: cosines under H^-1 (engine/normalize.py)
    query_rank: int = 0  # 0 = the exact scan; c_q > 0 = the low-rank query path
    candidates: int = 4  # low-rank path: rows re-scored exactly per result (x k)
    verbatim: bool = True  # also list examples holding the query's words verbatim
    totals_by: str | None = None  # also sum all N scores per value of this metadata key

    def __post_init__(self) -> None:
        checks = [
            (isinstance(self.k, int) and self.k >= 1, f"k must be >= 1, not {self.k}"),
            (self.direction in DIRECTIONS, f"direction must be one of {', '.join(DIRECTIONS)}"),
            (
                self.normalize in NORMALIZE,
                f"normalize must be none or unit, not {self.normalize!r}",
            ),
            (self.query_rank >= 0, f"query_rank must be >= 0, not {self.query_rank}"),
            (self.candidates >= 1, f"candidates must be >= 1, not {self.candidates}"),
            (
                self.totals_by is None
                or (isinstance(self.totals_by, str) and 0 < len(self.totals_by) <= MAX_KEY),
                f"totals_by must be a metadata key of 1 to {MAX_KEY} characters",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        if self.damping is not None:
            object.__setattr__(self, "damping", checked_damping(self.damping))

    def replace(self, **changes: object) -> QueryOptions:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def for_index(self, curvature: CurvatureRecord) -> QueryOptions:
        """These options for an index whose basis ``curvature`` describes: a damping equal
        to the build's becomes None (one cache entry, one preconditioner); ConfigError where
        the index cannot take a relative damping (built with an absolute lambda)."""
        if self.damping is None or self.damping == curvature.damping and curvature.relative:
            return self if self.damping is None else self.replace(damping=None)
        if not curvature.relative:
            raise ConfigError(
                "this index was built with an absolute lambda (--damping-abs): a relative "
                "damping at query time needs an index built with --damping"
            )
        return self

    @property
    def path(self) -> Literal["exact", "low-rank"]:
        return "low-rank" if self.query_rank else "exact"

    def scoring_key(self) -> str:
        """The options that change the answer, canonical (for cache keys): scan path, damping
        (``for_index`` first), normalisation, k and the totals' key."""
        scan = f"{self.query_rank}x{self.candidates}" if self.query_rank else "exact"
        alpha = "build" if self.damping is None else repr(float(self.damping))
        unit = ":unit" if self.normalize == "unit" else ""
        by = "" if self.totals_by is None else ":by" + json.dumps(self.totals_by)
        return f"{scan}:a{alpha}{unit}:k{self.k}{by}"

    def reported_damping(self, curvature: CurvatureRecord) -> float | None:
        """The relative damping the scores were computed with (None: an absolute lambda)."""
        if not curvature.relative:
            return None
        return curvature.damping if self.damping is None else self.damping
