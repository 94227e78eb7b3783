"""What every query-taking feature checks where a request enters: its options (the request's
over the server's, canonical for the index), its text, and example ids; each refusal here,
spelled once, as problem+json."""

from __future__ import annotations

from typing import Any

from indexer import ConfigError, DataError, Example, QueryOptions, QueryTooLongError

from ..errors import ApiError
from ..runtime import Runtime
from ..version import Version


class QueryIntake:
    def __init__(self, rt: Runtime):
        self.rt = rt

    def options(self, v: Version, **request: Any) -> QueryOptions:
        """A request's options over the server's defaults, canonical for the version ``v`` of
        the index; 422 where they are out of range or it or this server cannot score them."""
        rt = self.rt
        if request.get("damping") is None:
            request.pop("damping", None)  # the server's (rt.defaults), else the build's
        try:
            if request.get("normalize") == "unit" and rt.on_cluster:
                raise ConfigError("unit normalisation is not available on a cluster")
            if request.get("totals_by") is not None and rt.on_cluster:
                raise ConfigError("totals by a metadata key are not available on a cluster")
            return rt.defaults.replace(**request).for_index(v.index.curvature_record)
        except ConfigError as e:
            raise ApiError(422, "Not available", str(e)) from None

    def totals_key(self, v: Version, key: str) -> None:
        """422 unless some example of version ``v`` has the metadata key ``key`` (reads every
        example's metadata once per version: call it off the event loop)."""
        try:
            v.index.meta_table.codes(key)
        except DataError as e:
            raise ApiError(422, "Unknown metadata key", str(e)) from None

    def query(self, v: Version, prompt: str, completion: str | None) -> tuple[Example, int]:
        """The query as an Example and its token count; 422 when it is empty or too long.
        Tokenizes: call it off the event loop."""
        try:
            return v.checker.checked_query(prompt, completion, self.rt.settings.max_prompt_tokens)
        except QueryTooLongError as e:
            raise ApiError(422, "Query too long", str(e)) from None
        except DataError as e:
            raise ApiError(422, "Empty query", str(e)) from None

    def example_id(self, v: Version, example_id: int) -> int:
        """``example_id`` if version ``v`` of the index has it; else 404."""
        n = len(v.index)
        if not 0 <= example_id < n:
            raise ApiError(404, "Unknown example", f"example_id must be in [0, {n})")
        return example_id
