"""Where a task is registered: one `Registration` each, the only place that says what a task is.

A registration names the task's `Task` class (imported on first use: a forecasting run
pulls in statsmodels, which a classification run should not pay for), the torch-free
module of its job sections (`Data`, `Model`: `lstm-train config` validates a job at once,
importing no torch) and the options its `predict` takes beyond its positional inputs
(the command line is built from them).

A job's `task:` is one of
* a built-in task's name (`BUILTIN` below);
* the name of an entry point in the group `lstm_train.tasks` of an installed package
  (`[project.entry-points."lstm_train.tasks"] my_task = "my_package:REGISTRATION"`);
* a reference `my_package.module:OBJECT`, importable from `sys.path`.
An entry point or reference names a `Registration` (torch-free: keep it in a module
that imports no torch, as the built-ins do) or a `Task` subclass itself (its sections
then come from the class, which imports torch to validate a job; no predict options).
Nothing here imports torch.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from typing import TYPE_CHECKING, Any, Literal

from ..schema import ConfigError

if TYPE_CHECKING:
    from .base import Task

GROUP = "lstm_train.tasks"
NAME = re.compile(r"[a-z][a-z0-9_]*\Z")  # a task's name is a folder name in the prepared-data store


@dataclass(frozen=True)
class PredictOption:
    """One `lstm-train predict RUN_DIR` option of a task: `--flag VALUE` (or repeated, a list).
    The task's `predict` finds it in `options` under `dest` (None when not given)."""

    flag: str
    help: str
    repeat: bool = False  # `--text a --text b` -> ["a", "b"]
    type: Literal["str", "int", "float"] = "str"
    check: str | None = None  # a job key ("model.beam_size") whose schema validates the value

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    def add_to(self, parser: Any) -> None:
        kind = {"str": str, "int": int, "float": float}[self.type]
        parser.add_argument(self.flag, action="append" if self.repeat else "store", type=kind, help=self.help)


@dataclass(frozen=True)
class Registration:
    """A task: its name, its `Task` class (`"module:Class"`), the torch-free module of its job
    sections (`Data` and `Model`; None: the class's own) and its predict options."""

    name: str
    task: str
    sections: str | None = None
    predict_options: tuple[PredictOption, ...] = ()
    predict_inputs: str = "inputs"  # what the positional arguments of `predict` are, for --help

    def task_class(self) -> type[Task]:
        cls = load_object(self.task, f"task {self.name}")
        from .base import Task

        if not (isinstance(cls, type) and issubclass(cls, Task)):
            raise ConfigError(f"task {self.name}: {self.task} is not a lstm_train.tasks.base.Task subclass")
        if getattr(cls, "name", None) != self.name:
            raise ConfigError(f"task {self.name}: {self.task} is named {getattr(cls, 'name', None)!r}; a "
                              "registration and its Task class must carry the same name")
        return cls

    def job_sections(self) -> tuple[type, type]:
        source = importlib.import_module(self.sections) if self.sections else self.task_class()
        return source.Data, source.Model


TEXT = PredictOption("--text", "a text to read (repeatable)", repeat=True)
FILE = PredictOption("--file", "a file of texts, one per line")


def _builtin(name: str, cls: str, options: tuple[PredictOption, ...] = (), inputs: str = "texts") -> Registration:
    return Registration(name, f"lstm_train.tasks.{name}:{cls}", f"lstm_train.tasks.sections.{name}", options, inputs)


BUILTIN: tuple[Registration, ...] = (
    _builtin("classify", "ClassifyTask", inputs="image files"),
    _builtin("forecast", "ForecastTask", (PredictOption("--csv", "a CSV of the series to forecast from"),),
             inputs="values of the series"),
    _builtin("caption", "CaptionTask", inputs="image files (digit strips)"),
    _builtin("text_classify", "TextClassifyTask", (TEXT, FILE)),
    _builtin("tag", "TagTask", (TEXT, FILE, PredictOption("--conllu", "a CoNLL-U file whose tag column to fill"),
                                PredictOption("--output", "where to write the filled --conllu file"))),
    _builtin("translate", "TranslateTask", (TEXT, FILE, PredictOption(
        "--beam", "beam size (default: the job's model.beam_size)", type="int", check="model.beam_size"))),
    _builtin("language_model", "LanguageModelTask", (TEXT, FILE)),
    _builtin("sequence", "SequenceTask", (FILE,), inputs="sequences (numbers; steps by ';', features by ',')"),
)


def load_object(ref: str, what: str) -> Any:
    """The object at `package.module:attribute`, or a ConfigError saying why not."""
    module_name, _, attribute = ref.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"{what}: {ref!r} is not a reference (package.module:Object)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"{what}: cannot import {module_name} ({e}); install its package or put it on "
                          "PYTHONPATH") from None
    try:
        obj: Any = module
        for part in attribute.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise ConfigError(f"{what}: {module_name} has no {attribute}") from None
    return obj


def _as_registration(obj: Any, ref: str) -> Registration:
    """A registration from what an entry point or reference names: one, or a Task class."""
    if isinstance(obj, Registration):
        reg = obj
    elif isinstance(obj, type) and hasattr(obj, "Data") and hasattr(obj, "build_model"):
        reg = Registration(str(getattr(obj, "name", "")), f"{obj.__module__}:{obj.__qualname__}")
    else:
        raise ConfigError(f"task = {ref!r}: names a {type(obj).__name__}, not a Registration "
                          "(lstm_train.tasks.Registration) or a Task subclass")
    if not NAME.match(reg.name):
        raise ConfigError(f"task = {ref!r}: its name {reg.name!r} is not a plain name (lowercase letters, digits, _)")
    if reg.name in builtin() and ref != reg.name:
        raise ConfigError(f"task = {ref!r}: its name {reg.name!r} is a built-in task's; choose another")
    return reg


def builtin() -> dict[str, Registration]:
    return {r.name: r for r in BUILTIN}


def entry_point_names() -> list[str]:
    return sorted({e.name for e in metadata.entry_points(group=GROUP)})


@lru_cache(maxsize=None)
def registration(ref: str) -> Registration:
    """The registration a job's `task:` names (see the module docstring), or a ConfigError
    listing what it could have been."""
    if ref in builtin():
        return builtin()[ref]
    if ":" in ref:
        return _as_registration(load_object(ref, f"task = {ref!r}"), ref)
    points = [e for e in metadata.entry_points(group=GROUP) if e.name == ref]
    if points:
        try:
            obj = points[0].load()
        except ImportError as e:
            raise ConfigError(f"task = {ref!r}: its entry point {points[0].value} cannot be imported ({e})") from None
        return _as_registration(obj, ref)
    import difflib

    known = [*builtin(), *entry_point_names()]
    close = difflib.get_close_matches(str(ref), known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"task = {ref!r} is not a task.{hint} Allowed: {', '.join(known)}, or a Task of your own as "
                      f"package.module:Object (an entry point in the group {GROUP}, or a reference)")
