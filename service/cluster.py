"""Sharded serving on Ray Serve (``LORIF_CLUSTER``): the scan spread over shard groups.

This process keeps the model: it featurizes and preconditions each micro-batch once, sends
P_q to one ``ShardGroup`` deployment per group of shards (``Index.shard_groups``; its own Serve
application under ``lorif serve --cluster``, or bound into the service's application by
``service.serve_app``), each of ``cluster_replicas`` replicas that hold their shards (resident
in device memory when they fit, else streamed), and merges the groups' top-k exactly
(``merge_results``). A group that fails
(a replica killed mid-call) is asked again once — another replica answers when there are
several — and otherwise the batch fails with 503 + Retry-After: never a partial top-k.
Imported only when the cluster is on: ``lorif serve`` without it never imports Ray.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import ray
import torch
from ray import serve

from indexer import (
    Example,
    Explanation,
    Index,
    QueryEngine,
    QueryOptions,
    Resident,
    ScoreResult,
    make_resident,
    merge_results,
    resolve_device,
    score_store,
)

from .scorer import Scored, answers
from .scorer_process import ScorerUnavailable
from .settings import ServiceSettings

log = logging.getLogger("lorif")
CALL_TIMEOUT_S = 120.0
START_TIMEOUT_S = 600.0
STATUS_TTL_S = 0.5  # how often the replicas' states are read


@serve.deployment
class ShardGroup:
    """One group of shards of an index: scores preconditioned queries against its rows."""

    def __init__(
        self, path: str, fingerprint: str, shards: tuple[int, int], device: str, resident: Resident
    ):
        self.index = Index(path)
        if self.index.fingerprint != fingerprint:
            raise RuntimeError(f"{path} changed since the server opened it")
        self.first = self.index.parts[shards[0]].first
        self.device = resolve_device(device)
        # the group's rows in device memory when they fit (``resident``), else streamed
        self.store = make_resident(self.index.store(range(*shards)), self.device, resident)

    def score(
        self, p: dict[str, np.ndarray], ks: list[int], query_rank: int, candidates: int
    ) -> tuple[int, ScoreResult]:
        tensors = {name: torch.from_numpy(v).to(self.device) for name, v in p.items()}
        result = score_store(
            self.store, tensors, k=ks, keep_scores=False, device=self.device,
            query_rank=query_rank, candidates=candidates,
        )  # fmt: skip
        return self.first, result


def connect(address: str, attempts: int = 3) -> None:
    """``ray.init`` (``local``: a new Ray here), tried again on a refused connection: a Ray
    Client's server-side session can fail to start while the head is busy (seen in CI)."""
    for attempt in range(attempts):
        try:
            ray.init(address=address, log_to_driver=False)
            return
        except ConnectionError as e:
            if attempt == attempts - 1:
                raise
            log.warning("cluster: connecting to %s failed (%s), trying again", address, e)
            time.sleep(2.0)


class Group(NamedTuple):
    """A shard group as the scorer reaches it: its handle and where Serve reports its state."""

    handle: Any
    app: str
    deployment: str


def shard_group_name(g: int) -> str:
    return f"ShardGroup{g}"


def shard_group(index: Index, shards: range, settings: ServiceSettings, name: str) -> Any:
    """The bound deployment that serves rows of ``shards`` (``settings.cluster_*`` sizes it)."""
    return ShardGroup.options(  # type: ignore[attr-defined]
        name=name,
        num_replicas=settings.cluster_replicas,
        ray_actor_options={"num_cpus": settings.cluster_cpus, "num_gpus": settings.cluster_gpus},
        max_ongoing_requests=1,
        health_check_period_s=1.0,  # a dead replica is noticed in about a second
    ).bind(
        str(index.path.resolve()),
        index.fingerprint,
        (shards.start, shards.stop),
        settings.device,
        settings.resident,
    )


class ClusterScorer:
    """The Scoring of the service with the scan on Ray Serve (see the module docstring)."""

    def __init__(
        self,
        engine: QueryEngine,
        groups: list[Group],
        on_scan: Callable[[int, int, float], None] | None = None,
        owned: bool = True,
    ):
        self.engine, self.on_scan = engine, on_scan
        self.groups, self.owned = groups, owned
        self.placement = (f"ray: {len(groups)} shard groups", False)
        self._running = self._read_running()
        self._down_since: float | None = None
        self._closed = threading.Event()
        # Serve's controller is asked from a thread: /health/ready never waits on it
        threading.Thread(target=self._watch, name="lorif-cluster-watch", daemon=True).start()

    def _read_running(self) -> list[int]:
        """Running replicas per shard group, as Serve's controller reports them."""
        apps = serve.status().applications
        return [
            sum(
                n
                for state, n in apps[g.app].deployments[g.deployment].replica_states.items()
                if str(getattr(state, "value", state)) == "RUNNING"
            )
            if g.app in apps and g.deployment in apps[g.app].deployments
            else 0
            for g in self.groups
        ]

    def _watch(self) -> None:
        while not self._closed.wait(STATUS_TTL_S):
            try:
                self._running = self._read_running()
            except Exception as e:  # noqa: BLE001 - the controller unreachable: none running
                log.warning("cluster: Serve status unavailable (%s): %s", type(e).__name__, e)
                self._running = [0] * len(self.groups)
            if self.available:
                self._down_since = None
            elif self._down_since is None:
                self._down_since = time.monotonic()

    @property
    def available(self) -> bool:
        """Every shard group has a running replica (else answers would be partial: 503)."""
        return min(self._running, default=0) > 0

    @property
    def down_since(self) -> float | None:
        """When a shard group last lost its last running replica (None: all have one)."""
        return self._down_since

    @classmethod
    def start(
        cls,
        index: Index,
        settings: ServiceSettings,
        on_scan: Callable[[int, int, float], None] | None = None,
        handles: Sequence[Any] | None = None,
    ) -> ClusterScorer:
        """The shard groups' ``handles`` when this runs inside a Serve application (bound by
        ``service.serve_app``); else connect to Ray (``local``: one started here), deploy one
        application per shard group, owned by this scorer. Then load the model here."""
        s = settings
        if handles is not None:
            app = serve.get_replica_context().app_name
            groups = [Group(h, app, shard_group_name(g)) for g, h in enumerate(handles)]
        else:
            assert s.cluster, "neither shard-group handles nor a cluster address"
            if not ray.is_initialized():
                connect(s.cluster)
            if s.cluster == "local":  # the API is served here: no Serve proxy on its port
                serve.start(proxy_location="Disabled")
            groups = []
            for g, shards in enumerate(index.shard_groups(s.cluster_groups)):
                app, deployment = f"lorif-shards-{g}", shard_group_name(g)
                bound = shard_group(index, shards, s, deployment)
                handle = serve.run(bound, name=app, route_prefix=None)
                groups.append(Group(handle, app, deployment))
        log.info("cluster: %d shard groups on Ray Serve", len(groups))
        engine = QueryEngine.open(index, device=s.device, resident="off")
        scorer = cls(engine, groups, on_scan, owned=handles is None)
        deadline = time.monotonic() + START_TIMEOUT_S  # in a Serve app they start beside us
        while not scorer.available and time.monotonic() < deadline:
            time.sleep(STATUS_TTL_S)
        if not scorer.available:
            scorer.close()
            raise ScorerUnavailable(f"shard groups without a running replica: {scorer._running}")
        return scorer

    def score(self, queries: list[Example], options: Sequence[QueryOptions]) -> list[Scored]:
        """One fan-out for the batch (its queries share the server's scan path; unit
        normalisation never reaches here: ``Runtime.scoring_options`` refuses it)."""
        if not self.available:
            raise ScorerUnavailable("a shard group has no running replica (Ray is replacing it)")
        t0 = time.perf_counter()
        pre = self.engine.preconditioned_each(queries, [o.damping for o in options])
        p = {name: v.cpu().numpy() for name, v in pre.items()}
        t1 = time.perf_counter()
        ks = [o.k for o in options]
        args = (p, ks, options[0].query_rank, options[0].candidates)
        calls = [g.handle.score.remote(*args) for g in self.groups]
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
                self._running = self._read_running()
                if attempt == 0 and self._running[group] > 0:
                    call = self.groups[group].handle.score.remote(*args)
                else:
                    break
        raise ScorerUnavailable(f"shard group {group} of the cluster is not answering")

    def explain(self, query: Example, example_id: int, damping: float | None = None) -> Explanation:
        return self.engine.explain(query, example_id, damping)

    def close(self) -> None:
        self._closed.set()
        self.engine.close()
        if self.owned:
            for g in self.groups:
                serve.delete(g.app)
