"""Sharded serving on Ray Serve (``LORIF_CLUSTER``): the scan spread over shard groups.

This process keeps the model: it featurizes and preconditions each micro-batch once, sends
P_q to one ``ShardGroup`` deployment per group of shards (``service.shard_groups``; their own
Serve applications under ``lorif serve --cluster``, or bound into the service's application by
``service.serve_app``), naming the version of the index and the shards each group scans, and
merges the groups' top-k exactly (``merge_results``). A group that fails (a replica killed
mid-call) is asked again once — another replica answers when there are several — and otherwise
the batch fails with 503 + Retry-After: never a partial top-k. One ``ClusterScorer`` per
version of the index; the shard groups are shared by all of them.
Imported only when the cluster is on: ``lorif serve`` without it never imports Ray.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from indexer import (
    Example,
    Explanation,
    Index,
    QueryEngine,
    QueryOptions,
    ScoreResult,
    merge_results,
)

from .scorer import Scored, answers
from .scorer_process import ScorerUnavailable
from .shard_groups import ShardGroups, VersionRef

log = logging.getLogger("lorif")
CALL_TIMEOUT_S = 120.0
START_TIMEOUT_S = 600.0


class ClusterScorer:
    """The Scoring of one version of the index with the scan on Ray Serve (see the module
    docstring)."""

    def __init__(
        self,
        engine: QueryEngine,
        groups: ShardGroups,
        on_scan: Callable[[int, int, float], None] | None = None,
    ):
        self.engine, self.groups, self.on_scan = engine, groups, on_scan
        index = engine.index
        ranges = index.shard_groups(len(groups.groups))
        self.refs = [VersionRef.of(index, shards) for shards in ranges]
        self.placement = (f"ray: {len(groups.groups)} shard groups", False)

    @property
    def available(self) -> bool:
        return self.groups.available

    @property
    def down_since(self) -> float | None:
        return self.groups.down_since

    @classmethod
    def start(
        cls,
        index: Index,
        groups: ShardGroups,
        device: str,
        on_scan: Callable[[int, int, float], None] | None = None,
    ) -> ClusterScorer:
        """Load the model here for ``index``; wait until every shard group has a replica."""
        engine = QueryEngine.open(index, device=device, resident="off")
        scorer = cls(engine, groups, on_scan)
        deadline = time.monotonic() + START_TIMEOUT_S  # in a Serve app they start beside us
        while not groups.available and time.monotonic() < deadline:
            time.sleep(0.5)
        if not groups.available:
            scorer.close()
            raise ScorerUnavailable(f"shard groups without a running replica: {groups.running}")
        return scorer

    def score(self, queries: list[Example], options: Sequence[QueryOptions]) -> list[Scored]:
        """One fan-out for the batch (its queries share the server's scan path; unit
        normalisation never reaches here: ``QueryIntake.options`` refuses it)."""
        if not self.available:
            raise ScorerUnavailable("a shard group has no running replica (Ray is replacing it)")
        t0 = time.perf_counter()
        pre = self.engine.preconditioned_each(queries, [o.damping for o in options])
        p = {name: v.cpu().numpy() for name, v in pre.items()}
        t1 = time.perf_counter()
        ks = [o.k for o in options]
        args = (p, ks, options[0].query_rank, options[0].candidates)
        handles = [g.handle for g in self.groups.groups]
        calls = [h.score.remote(ref, *args) for h, ref in zip(handles, self.refs, strict=False)]
        parts = [self._result(g, call, args) for g, call in enumerate(calls)]
        res = merge_results(parts, max(ks))
        return answers(self.engine, res, ks, (t0, t1, time.perf_counter()), self.on_scan)

    def _result(self, group: int, call: Any, args: tuple[Any, ...]) -> tuple[int, ScoreResult]:
        """Group ``group``'s answer; asked again once if its replica failed and another one
        runs; else the scorer is unavailable (503 + Retry-After, never a partial top-k)."""
        for attempt in range(2):
            try:
                out: tuple[int, ScoreResult] = call.result(timeout_s=CALL_TIMEOUT_S)
                return out
            except Exception as e:  # noqa: BLE001 - a dead replica raises Ray's own errors
                log.warning("shard group %d call failed (%s): %s", group, type(e).__name__, e)
                if attempt == 0 and self.groups.refresh()[group] > 0:
                    handle = self.groups.groups[group].handle
                    call = handle.score.remote(self.refs[group], *args)
                else:
                    break
        raise ScorerUnavailable(f"shard group {group} of the cluster is not answering")

    def explain(self, query: Example, example_id: int, damping: float | None = None) -> Explanation:
        return self.engine.explain(query, example_id, damping)

    def close(self) -> None:
        self.engine.close()
