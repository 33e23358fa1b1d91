"""Every key of a job, explained from the schema itself: `lstm-train config JOB --explain KEY`.

The description, type and default of a key are those pydantic validates with (`Field(...,
description=...)` in `config`, `schema` and each task's `tasks/sections/` module), so what
`--explain` prints can never drift from what `run` accepts.  The job decides the task, and with
it the `data:` and `model:` keys; its own value of each key is printed beside the default.
Torch-free, like `config`: instant on a login node.
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from .schema import ConfigError


@dataclass(frozen=True)
class Key:
    """One leaf key of a job: dotted name, type (with its bounds), default, description, the job's value."""

    name: str
    type: str
    default: Any
    description: str
    value: Any
    required: bool = False


def job_keys(job: BaseModel) -> list[Key]:
    """Every leaf key of `job`'s schema, in the schema's order (sections expanded)."""
    return list(_walk(type(job), job.model_dump(mode="json"), ""))


def _walk(model: type[BaseModel], values: Any, prefix: str) -> Any:
    for name, info in model.model_fields.items():
        dotted = f"{prefix}{name}"
        value = values.get(name) if isinstance(values, dict) else None
        section = _section(info.annotation)
        if section is not None:  # a section: its keys
            if not info.is_required() and info.default is None:  # an optional section (train.halving): itself too
                yield Key(dotted, "section | None", None, _description(info), value)
                if value is None:  # unset: its keys as they would be, not as "this job" has them
                    value = {k: _default(f) for k, f in section.model_fields.items()}
            yield from _walk(section, value if isinstance(value, dict) else {}, f"{dotted}.")
            continue
        yield Key(dotted, type_name(info), _default(info), _description(info), value, info.is_required())


def _section(annotation: Any) -> type[BaseModel] | None:
    """The section model a field holds (alone or `| None`), else None."""
    for candidate in typing.get_args(annotation) or (annotation,):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _default(info: FieldInfo) -> Any:
    if info.default_factory is not None:
        try:
            return info.default_factory()  # type: ignore[call-arg]
        except TypeError:
            return None
    if info.default is PydanticUndefined:
        return None
    default = info.default
    return default.model_dump(mode="json") if isinstance(default, BaseModel) else default


def _description(info: FieldInfo) -> str:
    return " ".join((info.description or "").split())


def type_name(info: FieldInfo) -> str:
    """`int >= 1`, `float | None > 0`, `one of auto, min, max`: the annotation and its bounds."""
    name = _annotation(info.annotation)
    bounds = []
    for item in info.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("min_length", "length >=")):
            bound = getattr(item, attr, None)
            if bound is not None:
                bounds.append(f"{sign} {bound}")
    return f"{name} {', '.join(bounds)}" if bounds else name


def _annotation(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = [_annotation(a) for a in args if a is not type(None)]
        return " | ".join(parts) + (" | None" if type(None) in args else "")
    if origin is not None:
        inner = ", ".join(_annotation(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation)).replace("typing.", "")


def _shown(value: Any) -> str:
    return "null (none)" if value is None else repr(value)


def explain(job: BaseModel, key: str | None) -> str:
    """The text `config JOB --explain [KEY]` prints: every key (no KEY), the keys of a section, or one
    key in full; a key the job does not have is a ConfigError with the closest one."""
    keys = job_keys(job)
    if not key:
        return "\n".join(_line(k) for k in keys)
    exact = [k for k in keys if k.name == key]
    under = [k for k in keys if k.name.startswith(f"{key}.")]  # a section's keys (an optional one is a key too)
    if exact or under:
        return "\n".join(([_full(exact[0], job)] if exact else []) + [_line(k) for k in under])
    names = [k.name for k in keys]
    sections = sorted({n.rsplit(".", 1)[0] for n in names if "." in n})
    close = difflib.get_close_matches(key, names + sections, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"--explain {key}: not a key of this job (task {getattr(job, 'task', '?')}).{hint} "
                      f"`lstm-train config JOB --explain` lists them all")


def _line(k: Key) -> str:
    default = "required" if k.required else f"default {_shown(k.default)}"
    here = f"; this job: {_shown(k.value)}" if k.value != k.default and not k.required else ""
    return f"{k.name} ({k.type}; {default}{here}){': ' + k.description if k.description else ''}"


def _full(k: Key, job: BaseModel) -> str:
    lines = [k.name, f"  type:     {k.type}", f"  default:  {'required' if k.required else _shown(k.default)}",
             f"  this job: {_shown(k.value)}"]
    if k.description:
        lines.append(f"  {k.description}")
    if k.name == "train.select.metric":  # the names this job's task reports, with their direction
        reported = job.data.reported_metrics()  # type: ignore[attr-defined]
        lines.append("  metrics of this job: " + (", ".join(f"{n} ({d})" for n, d in reported.items()) if reported
                                                  else "not declared by its task (checked at the first evaluation)"))
    return "\n".join(lines)
