"""LoRIF indexer: turn (model, training examples) into a low-rank influence index, and query it.

Data flow (one folder per stage, see docs/architecture.md):
    data -> models (featurizer: capture + projection) -> engine (factorize, curvature, scoring)
         -> storage (index file: writer, reader, streamed factor stores)
orchestrated by ``build/`` (build an index, grow it) and ``query/`` (score queries against
one); ``curvature/`` registers the preconditioner kinds, ``storage/manifest.py`` types the
manifest.

The public API is importable from here (lazily, so ``import indexer.config`` stays cheap):
``BuildConfig``, ``CurvatureConfig``, ``build_index``, ``Index``, ``Manifest``,
``QueryEngine``, ``QueryOptions``, ``curvature_method`` (the registered kinds:
``CURVATURE_KINDS``), ``Example``, ``load_examples``, ``query_example``, ``Featurizer``,
``Task``, ``CausalLMTask``, ``ClassificationTask``, ``ScoreResult``, ``top_rows``, the
answer's shape (``Answer``, ``answers_of`` and its parts) and the errors.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_PUBLIC = {
    "BuildConfig": "config",
    "MIN_DAMPING": "config",
    "MAX_DAMPING": "config",
    "checked_damping": "config",
    "CurvatureConfig": "config",
    "PRESETS": "config",
    "build_index": "build",
    "Index": "storage.reader",
    "VerifyReport": "storage.integrity",
    "FORMAT_VERSION": "storage.manifest",
    "Manifest": "storage.manifest",
    "CurvatureRecord": "storage.manifest",
    "CURVATURE_KINDS": "curvature",
    "curvature_method": "curvature",
    "QueryEngine": "query",
    "QueryChecker": "query",
    "Resident": "storage.resident",
    "make_resident": "storage.resident",
    "Explanation": "query",
    "top_rows": "query",
    "TokenContribution": "query",
    "Example": "data",
    "snippet": "data",
    "load_examples": "data",
    "query_example": "data",
    "Featurizer": "models.featurizer",
    "Task": "models.tasks",
    "CausalLMTask": "models.tasks",
    "ClassificationTask": "models.tasks",
    "ScoreResult": "engine.scoring",
    "score_store": "engine.scoring",
    "merge_results": "engine.scoring",
    "use_threads": "threads",
    "resolve_device": "models.loading",
    "preload_libraries": "models.loading",
    "available_cpus": "threads",
    "LorifError": "errors",
    "ConfigError": "errors",
    "DataError": "errors",
    "IndexFormatError": "errors",
    "QueryTooLongError": "errors",
    "ModelLoadError": "errors",
    "QueryOptions": "query",
    "Direction": "query",
    "Normalize": "query",
    "VerbatimIndex": "verbatim",
    "VerbatimMatch": "verbatim",
    "build_verbatim": "verbatim",
    "verbatim_summary": "verbatim",
    "verbatim_evidence": "verbatim",
    "Answer": "query.answer",
    "answers_of": "query.answer",
    "answer_queries": "query.answer",
    "histogram_dict": "query.answer",
    "totals_dict": "query.answer",
    "provenance": "query.answer",
    "result_row": "query.answer",
    "scoring_dict": "query.answer",
    "Totals": "engine.summary",
    "N_BINS": "engine.summary",
    "ExampleQuery": "storage.metadata",
    "write_example_queries": "storage.metadata",
}
__all__ = [
    "__version__",
    "BuildConfig",
    "MIN_DAMPING",
    "MAX_DAMPING",
    "checked_damping",
    "CurvatureConfig",
    "PRESETS",
    "build_index",
    "Index",
    "VerifyReport",
    "FORMAT_VERSION",
    "Manifest",
    "CurvatureRecord",
    "CURVATURE_KINDS",
    "curvature_method",
    "QueryEngine",
    "QueryChecker",
    "Resident",
    "make_resident",
    "Explanation",
    "TokenContribution",
    "top_rows",
    "Example",
    "load_examples",
    "query_example",
    "snippet",
    "Featurizer",
    "Task",
    "CausalLMTask",
    "ClassificationTask",
    "ScoreResult",
    "score_store",
    "merge_results",
    "LorifError",
    "ConfigError",
    "DataError",
    "IndexFormatError",
    "ModelLoadError",
    "QueryTooLongError",
    "use_threads",
    "resolve_device",
    "preload_libraries",
    "available_cpus",
    "QueryOptions",
    "Direction",
    "Normalize",
    "VerbatimIndex",
    "VerbatimMatch",
    "build_verbatim",
    "verbatim_summary",
    "verbatim_evidence",
    "Answer",
    "answers_of",
    "answer_queries",
    "histogram_dict",
    "totals_dict",
    "provenance",
    "result_row",
    "scoring_dict",
    "Totals",
    "N_BINS",
    "ExampleQuery",
    "write_example_queries",
]

if TYPE_CHECKING:
    from .build import build_index
    from .config import (
        MAX_DAMPING,
        MIN_DAMPING,
        PRESETS,
        BuildConfig,
        CurvatureConfig,
        checked_damping,
    )
    from .curvature import KINDS as CURVATURE_KINDS
    from .curvature import method as curvature_method
    from .data import Example, load_examples, query_example, snippet
    from .engine.scoring import ScoreResult, merge_results, score_store
    from .engine.summary import N_BINS, Totals
    from .errors import (
        ConfigError,
        DataError,
        IndexFormatError,
        LorifError,
        ModelLoadError,
        QueryTooLongError,
    )
    from .models.featurizer import Featurizer
    from .models.loading import resolve_device
    from .models.tasks import CausalLMTask, ClassificationTask, Task
    from .query import Explanation, QueryChecker, QueryEngine, TokenContribution, top_rows
    from .query.answer import (
        Answer,
        answer_queries,
        answers_of,
        histogram_dict,
        provenance,
        result_row,
        scoring_dict,
        totals_dict,
    )
    from .query.options import Direction, Normalize, QueryOptions
    from .storage.integrity import VerifyReport
    from .storage.manifest import FORMAT_VERSION, CurvatureRecord, Manifest
    from .storage.metadata import ExampleQuery, write_example_queries
    from .storage.reader import Index
    from .storage.resident import Resident
    from .threads import available_cpus, use_threads
    from .verbatim import (
        VerbatimIndex,
        VerbatimMatch,
        build_verbatim,
        verbatim_evidence,
        verbatim_summary,
    )


_RENAMED = {"CURVATURE_KINDS": "KINDS", "curvature_method": "method"}


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        module = importlib.import_module(f"{__name__}.{_PUBLIC[name]}")
        return getattr(module, _RENAMED.get(name, name))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
