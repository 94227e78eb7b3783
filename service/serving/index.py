"""GET /v1/index: what the served index holds (the same summary as `lorif index info`) and how
this server scores it."""

from __future__ import annotations

from ..protocol import IndexSummary
from ..runtime import Runtime


class IndexServing:
    def __init__(self, rt: Runtime):
        self.rt = rt

    def summary(self) -> IndexSummary:
        rt = self.rt
        device, resident = rt.scorer.placement
        return IndexSummary(
            **rt.index.summary(),
            scoring_path=rt.defaults.path,
            damping=rt.defaults.reported_damping(rt.index.curvature_record),
            query_rank=rt.defaults.query_rank,
            scorer="cluster" if rt.on_cluster else rt.settings.scorer,
            device=device,
            resident=resident,
        )
