"""One flag generator for every command: a settings class's fields become typer options.

Two kinds of settings classes:
- dataclasses (``BuildConfig``): fields with ``help`` metadata are flags, a nested dataclass field
  contributes its own fields; the defaults are the dataclass's own, so ``--help`` shows them;
- pydantic settings (``ServiceSettings``): every field is a flag that defaults to "not given",
  so an unset flag leaves the ``LORIF_*`` environment variable or the field's default in charge.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import typer

_SCALARS: dict[Any, type] = {str: str, int: int, float: float, bool: bool}


@dataclass(frozen=True)
class Flag:
    param: str  # the Python parameter name (unique per command)
    path: tuple[str, ...]  # attribute path in the settings object, e.g. ("curvature", "rank")
    kind: Any  # str | int | float | bool | list[str]
    default: Any
    help: str

    @property
    def declaration(self) -> tuple[str, ...]:
        name = "--" + self.param.replace("_", "-")
        return (f"{name}/--no-{name[2:]}",) if self.kind is bool else (name,)


def dataclass_flags(cls: type, path: tuple[str, ...] = ()) -> list[Flag]:
    """Flags of a dataclass's fields (and of its nested dataclasses' fields)."""
    flags: list[Flag] = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            continue  # no default: not a flag
        if dataclasses.is_dataclass(default):
            flags += dataclass_flags(type(default), (*path, f.name))
        elif "help" in f.metadata:
            help_text = f.metadata["help"]
            if "choices" in f.metadata:
                help_text += f" [choices: {', '.join(f.metadata['choices'])}]"
            param = f.metadata.get("flag", f.name).replace("-", "_")
            flags.append(Flag(param, (*path, f.name), type(default), default, help_text))
    return flags


def settings_flags(model: Any, env_prefix: str, skip: tuple[str, ...] = ()) -> list[Flag]:
    """Flags of a pydantic settings model; each defaults to None (= not given)."""
    flags = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        default = field.default if field.default_factory is None else field.default_factory()
        help_text = f"{field.description} (env {env_prefix}{name.upper()}, default {default!r})"
        flags.append(Flag(name, (name,), _annotation_kind(field.annotation), None, help_text))
    return flags


def _annotation_kind(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    if typing.get_origin(args[0]) is list:
        return list[str]
    return _SCALARS.get(args[0], str)


def command(
    fn: Callable[..., None], flags: list[Flag], leading: list[inspect.Parameter] | None = None
) -> Callable[..., None]:
    """``fn`` with a signature typer reads: the ``leading`` parameters, then one keyword
    option per flag (``show_default`` only where the flag has a real default)."""
    params = list(leading or [])
    for flag in flags:
        annotation = flag.kind if flag.default is not None else flag.kind | None
        option = typer.Option(
            flag.default, *flag.declaration, help=flag.help, show_default=flag.default is not None
        )
        params.append(
            inspect.Parameter(
                flag.param, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation
            )
        )

    def wrapper(**kwargs: Any) -> None:
        fn(**kwargs)

    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    wrapper.__doc__ = fn.__doc__
    return wrapper


def to_dataclass(cls: type, flags: list[Flag], values: dict[str, Any]) -> Any:
    """Build ``cls`` (with its nested dataclasses) from the flags' values."""
    nested: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for flag in flags:
        if flag.param not in values:
            continue
        if len(flag.path) == 1:
            top[flag.path[0]] = values[flag.param]
        else:
            nested.setdefault(flag.path[0], {})[flag.path[1]] = values[flag.param]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name, sub in nested.items():
        factory = fields[name].default_factory
        assert factory is not dataclasses.MISSING, f"{cls.__name__}.{name} has no default"
        top[name] = dataclasses.replace(factory(), **sub)
    return cls(**top)


def given(flags: list[Flag], values: dict[str, Any]) -> dict[str, Any]:
    """The settings-model overrides the user actually passed."""
    return {
        f.path[0]: values[f.param]
        for f in flags
        if values.get(f.param) is not None and values[f.param] != []
    }
