"""The whole service as one Ray Serve application: ``serve run service.serve_app:build
index=/data/index`` or the import path of a KubeRay ``RayService`` (deploy/kuberay/).

The ingress deployment is the same FastAPI app as ``lorif serve`` (routes, errors, metrics,
cache, page): it featurizes and preconditions each micro-batch once and fans P_q out to one
``ShardGroup{g}`` deployment per group of shards, bound into the same application, then merges
their top-k (``service.cluster``). Serve's proxy answers HTTP; its per-deployment options
(``num_replicas``, ``ray_actor_options``) can be overridden in the Serve config by name
(``Ingress``, ``ShardGroup0``, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray import serve
from ray.serve import Application

from indexer import Index

from .app import create_app
from .settings import ServiceSettings
from .shard_groups import shard_group, shard_group_name


@serve.deployment(name="Ingress", health_check_period_s=2.0)
@serve.ingress()
class Ingress:
    """The service's FastAPI app on a Serve replica, holding the shard groups' handles."""

    def __init__(self, settings: dict[str, Any], *shard_groups: Any):
        self.settings = ServiceSettings(**settings)
        self.shard_groups = list(shard_groups)

    def __serve_build_asgi_app__(self) -> Any:
        return create_app(self.settings, shard_groups=self.shard_groups)


def build(args: dict[str, Any]) -> Application:
    """The application for an index. ``args``: any ``ServiceSettings`` field by name (the
    ``LORIF_*`` environment fills the rest) — ``index`` at least; ``cluster_groups``,
    ``cluster_replicas``, ``cluster_cpus``, ``cluster_gpus`` size the shard groups. The index
    must be at the same path on every node (a shared volume)."""
    unknown = sorted(set(args) - set(ServiceSettings.model_fields))
    if unknown:
        raise ValueError(f"unknown settings in the Serve application's args: {unknown}")
    settings = ServiceSettings(**args)
    if not settings.index:
        raise ValueError("the Serve application needs args.index: the path of the index")
    settings.index = str(Path(settings.index).resolve())  # replicas need not share our cwd
    index = Index(settings.index)
    try:
        groups = [
            shard_group(index, shards, settings, shard_group_name(g))
            for g, shards in enumerate(index.shard_groups(settings.cluster_groups))
        ]
    finally:
        index.close()
    return Ingress.bind(settings.model_dump(), *groups)  # type: ignore[attr-defined]
