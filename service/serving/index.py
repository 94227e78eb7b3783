"""GET /v1/index: what the served version of the index holds (the same summary as `lorif index
info`), which version it is and how this server scores it; POST /v1/admin/reload: switch to
the published version now."""

from __future__ import annotations

from ..errors import ApiError
from ..protocol import IndexSummary, ReloadResponse, VersionSummary
from ..runtime import Runtime


class IndexServing:
    def __init__(self, rt: Runtime):
        self.rt = rt

    def summary(self) -> IndexSummary:
        rt, v = self.rt, self.rt.current
        device, resident = v.scorer.placement
        return IndexSummary(
            **v.index.summary(),
            version=VersionSummary(**v.summary()),
            refused_version=rt.versions.refused,
            scoring_path=rt.defaults.path,
            damping=rt.defaults.reported_damping(v.index.curvature_record),
            query_rank=rt.defaults.query_rank,
            scorer="cluster" if rt.on_cluster else rt.settings.scorer,
            device=device,
            resident=resident,
        )

    async def reload(self) -> ReloadResponse:
        """Open and switch to the published version; 409 when it is refused."""
        outcome = await self.rt.versions.reload()
        if outcome["status"] == "refused":
            raise ApiError(
                409,
                "Version refused",
                f"{outcome['error']}; still serving version {outcome['version']['number']}",
            )
        return ReloadResponse(
            status=outcome["status"], version=VersionSummary(**outcome["version"])
        )
