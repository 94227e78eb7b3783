"""Sharded serving on Ray Serve (``LORIF_CLUSTER``): the scan spread over shard groups.

This process keeps the model: it featurizes and preconditions each micro-batch once, sends
P_q to one Serve application per group of shards (``Index.shard_groups``), each of
``cluster_replicas`` replicas that hold their shards (resident in device memory when they fit,
else streamed), and merges the groups' top-k exactly (``merge_results``). A group that fails
(a replica killed mid-call) is asked again once — another replica answers when there are
several — and otherwise the batch fails with 503 + Retry-After: never a partial top-k.
Imported only when the cluster is on: ``lorif serve`` without it never imports Ray.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import ray
import torch
from ray import serve

from indexer import (
    Example,
    Explanation,
    Index,
    QueryEngine,
    ScoreResult,
    merge_results,
    score_store,
)

from .scorer import Scored, ScoringOptions, answers
from .scorer_process import ScorerUnavailable

log = logging.getLogger("lorif")
CALL_TIMEOUT_S = 120.0
STATUS_TTL_S = 0.5  # how long a look at the replicas' states is reused


@serve.deployment
class ShardGroup:
    """One group of shards of an index: scores preconditioned queries against its rows."""

    def __init__(self, path: str, fingerprint: str, shards: tuple[int, int], device: str):
        self.index = Index(path)
        if self.index.fingerprint != fingerprint:
            raise RuntimeError(f"{path} changed since the server opened it")
        self.store = self.index.store(range(*shards))
        self.first = self.index.parts[shards[0]].first
        self.device = torch.device(
            "cuda" if device == "auto" and torch.cuda.is_available() else
            ("cpu" if device == "auto" else device)
        )  # fmt: skip

    def score(
        self, p: dict[str, np.ndarray], ks: list[int], query_rank: int, candidates: int
    ) -> tuple[int, ScoreResult]:
        tensors = {name: torch.from_numpy(v).to(self.device) for name, v in p.items()}
        result = score_store(
            self.store, tensors, k=ks, keep_scores=False, device=self.device,
            query_rank=query_rank, candidates=candidates,
        )  # fmt: skip
        return self.first, result

    def rows(self) -> int:
        return len(self.store)


class ClusterScorer:
    """The Scoring of the service with the scan on Ray Serve (see the module docstring)."""

    def __init__(
        self,
        engine: QueryEngine,
        groups: list[Any],
        options: ScoringOptions,
        on_scan: Callable[[int, int, float], None] | None = None,
    ):
        self.engine, self.groups, self.options, self.on_scan = engine, groups, options, on_scan
        self.placement = (f"ray: {len(groups)} shard groups", False)
        self._seen: tuple[float, list[int]] = (0.0, [])

    def running(self) -> list[int]:
        """Running replicas per shard group (Serve's view, at most STATUS_TTL_S old)."""
        at, counts = self._seen
        if time.monotonic() - at > STATUS_TTL_S:
            apps = serve.status().applications
            counts = [
                sum(
                    n
                    for d in apps[f"lorif-shards-{g}"].deployments.values()
                    for state, n in d.replica_states.items()
                    if str(getattr(state, "value", state)) == "RUNNING"
                )
                if f"lorif-shards-{g}" in apps
                else 0
                for g in range(len(self.groups))
            ]
            self._seen = (time.monotonic(), counts)
        return counts

    @property
    def available(self) -> bool:
        """Every shard group has a running replica (else answers would be partial: 503)."""
        return min(self.running(), default=0) > 0

    @classmethod
    def start(
        cls,
        index: Index,
        address: str,
        groups: int,
        replicas: int,
        cpus: float,
        gpus: float,
        device: str,
        options: ScoringOptions,
        on_scan: Callable[[int, int, float], None] | None = None,
    ) -> ClusterScorer:
        """Connect to Ray (``auto``: a local one started here), deploy one application per
        shard group and load the model here for featurizing."""
        if not ray.is_initialized():
            ray.init(address=None if address == "local" else address, log_to_driver=False)
        handles = []
        for g, shards in enumerate(index.shard_groups(groups)):
            app = ShardGroup.options(  # type: ignore[attr-defined]
                num_replicas=replicas,
                ray_actor_options={"num_cpus": cpus, "num_gpus": gpus},
                max_ongoing_requests=1,
                health_check_period_s=1.0,  # a dead replica is noticed in about a second
            ).bind(
                str(index.path.resolve()), index.fingerprint, (shards.start, shards.stop), device
            )
            handles.append(serve.run(app, name=f"lorif-shards-{g}", route_prefix=None))
        log.info("cluster: %d shard groups x %d replicas on Ray", len(handles), replicas)
        engine = QueryEngine.open(index, device=device, resident="off")
        return cls(engine, handles, options, on_scan)

    def score(self, queries: list[Example], ks: Sequence[int]) -> list[Scored]:
        if not self.available:
            raise ScorerUnavailable("a shard group has no running replica (Ray is replacing it)")
        t0 = time.perf_counter()
        p = {name: v.cpu().numpy() for name, v in self.engine.preconditioned(queries).items()}
        t1 = time.perf_counter()
        args = (p, list(ks), self.options.query_rank, self.options.candidates)
        calls = [h.score.remote(*args) for h in self.groups]
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
                self._seen = (0.0, [])
                if attempt == 0 and self.running()[group] > 0:
                    call = self.groups[group].score.remote(*args)
                else:
                    break
        raise ScorerUnavailable(f"shard group {group} of the cluster is not answering")

    def explain(self, query: Example, example_id: int) -> Explanation:
        return self.engine.explain(query, example_id)

    def close(self) -> None:
        self.engine.close()
        for g in range(len(self.groups)):
            serve.delete(f"lorif-shards-{g}")
