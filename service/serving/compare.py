"""POST /v1/compare: two queries against the same version of the index with the same options —
the training examples they share among their top-k and those only one of them has, each with
its rank and score for both (looked up to ``depth`` ranks: beyond it a rank is null)."""

from __future__ import annotations

import asyncio
from typing import Any

from indexer import provenance, query_example, snippet

from ..protocol_views import CompareRequest, CompareResponse, CompareRow, Provenance
from ..runtime import Runtime
from ..scorer import Scored
from .attributions import AttributionServing
from .queries import QueryIntake

MAX_DEPTH = 1000


def depth_for(k: int) -> int:
    """Ranks looked up per query: 5 k, at least 100, at most MAX_DEPTH (the page's scans)."""
    return min(MAX_DEPTH, max(100, 5 * k))


class CompareServing:
    def __init__(self, rt: Runtime, intake: QueryIntake, attributions: AttributionServing):
        self.rt, self.intake, self.attributions = rt, intake, attributions

    async def create(self, req: CompareRequest) -> CompareResponse:
        async with self.rt.versions.hold() as v:
            depth = depth_for(req.k)
            options = self.intake.options(
                v, k=depth, direction=req.direction, damping=req.damping,
                normalize=req.normalize, verbatim=False,
            )  # fmt: skip
            (a, _), (b, _) = await asyncio.gather(
                self.attributions.scored(v, req.a.prompt, req.a.completion, options),
                self.attributions.scored(v, req.b.prompt, req.b.completion, options),
            )
            ranked = [self._ranks(s, req.direction) for s in (a, b)]
            top = [list(r)[: req.k] for r in ranked]
            shared = sorted(set(top[0]) & set(top[1]),
                            key=lambda i: (min(ranked[0][i][0], ranked[1][i][0]), i))  # fmt: skip
            groups = [shared, [i for i in top[0] if i not in shared],
                      [i for i in top[1] if i not in shared]]  # fmt: skip
            ids = [i for g in groups for i in g]
            examples = dict(zip(ids, await self.rt.offload(v.examples.get_many, ids), strict=True))
            damping = options.reported_damping(v.index.curvature_record)
            prov = [
                Provenance(**provenance(v.index_summary, query_example(q.prompt, q.completion),
                                        options.replace(k=req.k), damping, v.number))
                for q in (req.a, req.b)
            ]  # fmt: skip
        chars = self.rt.settings.snippet_chars

        def row(i: int) -> CompareRow:
            ra, rb = ranked[0].get(i), ranked[1].get(i)
            ex = examples[i]
            return CompareRow(
                example_id=i, snippet=snippet(ex.text, chars), meta=ex.meta,
                rank_a=ra[0] if ra else None, score_a=ra[1] if ra else None,
                rank_b=rb[0] if rb else None, score_b=rb[1] if rb else None,
            )  # fmt: skip

        rows = [[row(i) for i in g] for g in groups]
        return CompareResponse(
            index_fingerprint=v.fingerprint, direction=req.direction, k=req.k, depth=depth,
            shared=rows[0], only_a=rows[1], only_b=rows[2], overlap=len(shared) / req.k,
            provenance_a=prov[0], provenance_b=prov[1],
        )  # fmt: skip

    @staticmethod
    def _ranks(s: Scored, direction: str) -> dict[int, Any]:
        """{example id: (rank, score)} of one query's ranked list, in rank order."""
        ids, scores = (
            (s.proponent_ids, s.proponent_scores)
            if direction == "proponents"
            else (s.opponent_ids, s.opponent_scores)
        )
        return {int(i): (r, float(x)) for r, (i, x) in enumerate(zip(ids, scores, strict=True), 1)}
