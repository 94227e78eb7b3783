"""One router per feature; ``ROUTERS`` is what the app factory includes, in order."""

from __future__ import annotations

from . import attributions, compare, examples, explanations, health, index, page

ROUTERS = [
    attributions.router,
    compare.router,
    explanations.router,
    examples.router,
    index.router,
    health.router,
    page.router,
]
