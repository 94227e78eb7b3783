"""One serving object per feature (vllm's ``serving_*`` pattern): its route parses the request
and calls one method; the object owns the feature's work (options, cache, scoring, rendering)
and its refusals. ``Serving`` holds them all; the app factory makes it over the runtime."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from ..runtime import Runtime
from .attributions import AttributionServing
from .compare import CompareServing
from .examples import ExampleServing
from .explanations import ExplanationServing
from .index import IndexServing
from .queries import QueryIntake


@dataclass
class Serving:
    attributions: AttributionServing
    explanations: ExplanationServing
    examples: ExampleServing
    index: IndexServing
    compare: CompareServing

    @classmethod
    def over(cls, rt: Runtime) -> Serving:
        intake = QueryIntake(rt)
        attributions = AttributionServing(rt, intake)
        return cls(
            attributions,
            ExplanationServing(rt, intake),
            ExampleServing(rt, intake),
            IndexServing(rt),
            CompareServing(rt, intake, attributions),
        )


async def serving(request: Request) -> Serving:
    """FastAPI dependency: the app's serving objects (async: FastAPI runs a plain function
    dependency in its thread pool, a thread hop on every request)."""
    s: Serving = request.app.state.serving
    return s
