"""The shard groups of a cluster (Ray Serve deployments) and how the server reaches them.

A ``ShardGroup`` replica scores preconditioned queries against the rows of a range of shards of
the version of the index each call names (``VersionRef``): it opens a version on its first call
(the one it was deployed for at start), keeps the last ``KEEP_VERSIONS`` open, so calls of a
version being replaced still find theirs, and closes older ones. The deployments outlive
versions: the server follows its index without redeploying anything.

``ShardGroups`` is the server's side: the handles (deployed by this process, or bound into the
Serve application it is the ingress of) and the running replicas per group, read from Serve's
controller by a thread so that readiness never waits on it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import ray
import torch
from ray import serve

from indexer import (
    Index,
    Manifest,
    Resident,
    ScoreResult,
    make_resident,
    resolve_device,
    score_store,
)

from .settings import ServiceSettings

log = logging.getLogger("lorif")
STATUS_TTL_S = 0.5  # how often the replicas' states are read
KEEP_VERSIONS = 2


class VersionRef(NamedTuple):
    """A version of the index and a range of its shards, as a call names them."""

    fingerprint: str
    manifest: str | None  # a sharded index's manifest (JSON): that version is opened as it is
    shards: tuple[int, int]

    @classmethod
    def of(cls, index: Index, shards: range) -> VersionRef:
        manifest = index.manifest.to_json() if index.sharded else None
        return cls(index.fingerprint, manifest, (shards.start, shards.stop))


@serve.deployment
class ShardGroup:
    """Scores preconditioned queries against the rows of the version and shards a call names."""

    def __init__(self, path: str, device: str, resident: Resident, first: VersionRef):
        self.path, self.resident = path, resident
        self.device = resolve_device(device)
        self.held: OrderedDict[VersionRef, tuple[Index, Any, int]] = OrderedDict()
        try:
            self._open(first)  # ready for the first call
        except Exception as e:  # noqa: BLE001 - a replica started later: versions on call
            log.warning("shard group: the version it was deployed for is gone (%s)", e)

    def _open(self, ref: VersionRef) -> tuple[Index, Any, int]:
        if ref in self.held:
            self.held.move_to_end(ref)
            return self.held[ref]
        manifest = None if ref.manifest is None else Manifest.from_dict(json.loads(ref.manifest))
        index = Index(self.path, manifest)
        if index.fingerprint != ref.fingerprint:
            index.close()
            raise RuntimeError(f"{self.path} is no longer version {ref.fingerprint}")
        shards = range(*ref.shards)
        # the group's rows in device memory when they fit (``resident``), else streamed
        store = make_resident(index.store(shards), self.device, self.resident)
        self.held[ref] = (index, store, index.parts[shards.start].first)
        while len(self.held) > KEEP_VERSIONS:
            old, _, _ = self.held.popitem(last=False)[1]
            old.close()
        return self.held[ref]

    def score(
        self,
        ref: VersionRef,
        p: dict[str, np.ndarray],
        ks: list[int],
        query_rank: int,
        candidates: int,
    ) -> tuple[int, ScoreResult]:
        _, store, first = self._open(VersionRef(*ref))
        tensors = {name: torch.from_numpy(v).to(self.device) for name, v in p.items()}
        result = score_store(
            store, tensors, k=ks, keep_scores=False, device=self.device,
            query_rank=query_rank, candidates=candidates,
        )  # fmt: skip
        return first, result


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
        str(index.path.resolve()), settings.device, settings.resident, VersionRef.of(index, shards)
    )


class ShardGroups:
    """The deployed shard groups (see the module docstring); ``owned``: deployed by this
    process, deleted by ``close``."""

    def __init__(self, groups: list[Group], owned: bool):
        self.groups, self.owned = groups, owned
        self._running = self._read_running()
        self._down_since: float | None = None
        self._closed = threading.Event()
        threading.Thread(target=self._watch, name="lorif-cluster-watch", daemon=True).start()

    @classmethod
    def start(
        cls, index: Index, settings: ServiceSettings, handles: Sequence[Any] | None = None
    ) -> ShardGroups:
        """The shard groups' ``handles`` when this runs inside a Serve application (bound by
        ``service.serve_app``); else connect to Ray (``local``: one started here) and deploy
        one application per shard group of ``index``."""
        s = settings
        if handles is not None:
            app = serve.get_replica_context().app_name
            return cls([Group(h, app, shard_group_name(g)) for g, h in enumerate(handles)], False)
        assert s.cluster, "neither shard-group handles nor a cluster address"
        if not ray.is_initialized():
            connect(s.cluster)
        if s.cluster == "local":  # the API is served here: no Serve proxy on its port
            serve.start(proxy_location="Disabled")
        groups = []
        for g, shards in enumerate(index.shard_groups(s.cluster_groups)):
            app, deployment = f"lorif-shards-{g}", shard_group_name(g)
            bound = shard_group(index, shards, s, deployment)
            groups.append(Group(serve.run(bound, name=app, route_prefix=None), app, deployment))
        log.info("cluster: %d shard groups on Ray Serve", len(groups))
        return cls(groups, True)

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
            self.refresh()

    def refresh(self) -> list[int]:
        """Read the running replicas now (a failed call asks before trying again)."""
        try:
            self._running = self._read_running()
        except Exception as e:  # noqa: BLE001 - the controller unreachable: none running
            log.warning("cluster: Serve status unavailable (%s): %s", type(e).__name__, e)
            self._running = [0] * len(self.groups)
        if self.available:
            self._down_since = None
        elif self._down_since is None:
            self._down_since = time.monotonic()
        return self._running

    @property
    def running(self) -> list[int]:
        return self._running

    @property
    def available(self) -> bool:
        """Every shard group has a running replica (else answers would be partial: 503)."""
        return min(self._running, default=0) > 0

    @property
    def down_since(self) -> float | None:
        """When a shard group last lost its last running replica (None: all have one)."""
        return self._down_since

    def close(self) -> None:
        self._closed.set()
        if self.owned:
            for g in self.groups:
                serve.delete(g.app)
