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

A run directory is someone else's as often as not (a shared folder, a W&B artifact), so the
`task:` of its config.yaml is read under `from_run_directory`: a built-in, an entry point, or a
reference whose every module is a file of an installed distribution (importlib.metadata: its
RECORD, or an editable install's project folder) or of lstm_train itself.  A module beside the
run, in the current folder or behind an empty sys.path entry is never imported, nor a module of
the standard library (`task: this:X`).  A reference the user names himself, `--task REF` on the
command line or `LSTM_TRAIN_TASKS=REF,REF` in the environment, is imported as a job file's is.
An entry point or reference names a `Registration` (torch-free: keep it in a module
that imports no torch, as the built-ins do) or a `Task` subclass itself: one that names its
registration (`registration = REGISTRATION`) stands for it; one without declares its own
`name`, `Data` and `Model` (its sections then come from the class, which imports torch to
validate a job; no predict options).  A registration is the one place a task's name and
sections are declared: the class that names it gets them from it (`Task.__init_subclass__`).
Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import importlib
import importlib.util
import json
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..schema import ConfigError

if TYPE_CHECKING:
    from .base import Task

GROUP = "lstm_train.tasks"
TRUSTED_ENV = "LSTM_TRAIN_TASKS"  # references the user trusts, comma-separated: imported from sys.path
DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
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

    def add_to(self, parser: Any, shown: bool = True, note: str = "") -> None:
        """The option on an argparse parser; `shown` False: parsed, but not listed by --help."""
        kind = {"str": str, "int": int, "float": float}[self.type]
        said = (f"{self.help} ({note})" if note else self.help) if shown else argparse.SUPPRESS
        parser.add_argument(self.flag, action="append" if self.repeat else "store", type=kind, help=said)


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
        if getattr(cls, "name", None) != self.name or vars(cls).get("registration") not in (None, self):
            raise ConfigError(f"task {self.name}: {self.task} names another registration (its name "
                              f"{getattr(cls, 'name', None)!r}); give the class `registration = ` this one")
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
BUILTIN_TASKS: dict[str, Registration] = {r.name: r for r in BUILTIN}


def load_object(ref: str, what: str, installed_only: str | None = None) -> Any:
    """The object at `package.module:attribute`, or a ConfigError saying why not.  With
    `installed_only` (what named it: a run's config.yaml), the module is imported only if it is
    installed (`installed_file`); a module beside the run or in the current folder never runs."""
    module_name, _, attribute = ref.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"{what}: {ref!r} is not a reference (package.module:Object)")
    if module_name.startswith("."):
        raise ConfigError(f"{what}: {module_name} is a relative module name; name the module in full "
                          "(package.module:Object)")
    if not DOTTED.match(module_name) or not DOTTED.match(attribute):
        raise ConfigError(f"{what}: {ref!r} is not a reference (package.module:Object: Python names joined by dots)")
    if installed_only is not None:
        why = not_installed(module_name)
        if why:
            raise ConfigError(
                f"{what}: {why}; a task named by {installed_only} is imported only when it is built in or "
                f"installed (an entry point of {GROUP}, or a module of an installed package), never from the "
                f"run directory or the current folder. If you trust that code, name it yourself: "
                f"--task {ref} or {TRUSTED_ENV}={ref}")
    module = _import(module_name, what)
    try:
        obj: Any = module
        for part in attribute.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise ConfigError(f"{what}: {module_name} has no {attribute}") from None
    return obj


def _import(module_name: str, what: str) -> Any:
    """import_module, whatever the module does wrong a one-line ConfigError naming it."""
    try:
        return importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"{what}: cannot import {module_name} ({e}); install its package or put it on "
                          "PYTHONPATH") from None
    except SyntaxError as e:  # its file and line; never the line's text
        raise ConfigError(f"{what}: cannot import {module_name}: SyntaxError in {Path(e.filename or '?').name} "
                          f"line {e.lineno}") from None
    except Exception as e:  # noqa: BLE001 - a module that raises at import: its failure, in one line
        from ..files.validation import shorten

        raise ConfigError(f"{what}: cannot import {module_name}: it raised {type(e).__name__} "
                          f"({shorten(str(e))[1:-1] if str(e) else 'no message'})") from None


def not_installed(module_name: str) -> str | None:
    """None when `module_name` and every package above it is a file of an installed distribution
    (or of lstm_train itself); else why not.  Looked up without running the module: each parent
    is checked before it is imported to find the next."""
    parts = module_name.split(".")
    for i in range(1, len(parts) + 1):
        name = ".".join(parts[:i])
        loaded = sys.modules.get(name)
        try:
            spec = loaded.__spec__ if loaded is not None else importlib.util.find_spec(name)
        except (ImportError, ValueError) as e:
            return f"cannot find {name} ({e})"
        if spec is None:
            return f"no module named {name} is installed"
        if spec.origin is None or not spec.has_location:  # a namespace package (or a built-in module)
            if spec.submodule_search_locations is not None and i < len(parts):
                continue  # holds nothing that runs; its modules are checked one by one
            return f"{name} is not a module of an installed package"
        if not installed_file(Path(spec.origin), parts[0]):
            return f"{name} ({spec.origin}) is not a file of an installed package"
    return None


def installed_file(path: Path, top: str) -> bool:
    """Whether `path` is lstm_train's own or listed by an installed distribution that provides the
    top-level package `top` (its RECORD; an editable install: under its project folder)."""
    path = path.resolve()
    own = Path(__file__).resolve().parents[1]
    if path.is_relative_to(own):
        return True
    for dist_name in metadata.packages_distributions().get(top, []):
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError:
            continue
        if path in _files(dist):
            return True
        with contextlib.suppress(TypeError, ValueError, AttributeError):
            url = json.loads(dist.read_text("direct_url.json") or "{}")
            if url.get("dir_info", {}).get("editable") and url["url"].startswith("file://"):
                if path.is_relative_to(Path(url["url"][7:]).resolve()):
                    return True
    return False


def _files(dist: metadata.Distribution) -> set[Path]:
    return {Path(dist.locate_file(f)).resolve() for f in dist.files or () if str(f).endswith((".py", ".pyc", ".so"))}


def trusted_references() -> set[str]:
    """The references the user trusts in his own environment: LSTM_TRAIN_TASKS=REF,REF."""
    return {r.strip() for r in os.environ.get(TRUSTED_ENV, "").split(",") if r.strip()}


RUN_DIRECTORY = "a run directory"
_FROM_RUN: contextvars.ContextVar[tuple[str, frozenset[str]] | None] = contextvars.ContextVar("task_named_by",
                                                                                            default=None)


@contextlib.contextmanager
def from_run_directory(trusted: tuple[str, ...] = ()) -> Iterator[None]:
    """Within: a task is named by a run's config.yaml, which the user may have received from
    anyone; `registration` imports only what is installed (see the module docstring), or a
    reference in `trusted` (the user's `--task`) or in LSTM_TRAIN_TASKS."""
    token = _FROM_RUN.set((RUN_DIRECTORY, frozenset(trusted)))
    try:
        yield
    finally:
        _FROM_RUN.reset(token)


def _as_registration(obj: Any, ref: str) -> Registration:
    """A registration from what an entry point or reference names: one, or a Task class."""
    if isinstance(obj, Registration):
        reg = obj
    elif isinstance(obj, type) and isinstance(vars(obj).get("registration"), Registration):
        reg = vars(obj)["registration"]  # a Task class that names its registration
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
    return BUILTIN_TASKS


def entry_point_names() -> list[str]:
    return sorted({e.name for e in metadata.entry_points(group=GROUP)})


def registration(ref: str) -> Registration:
    """The registration a job's `task:` names (see the module docstring), or a ConfigError
    listing what it could have been.  Under `from_run_directory`, only what is installed."""
    context = _FROM_RUN.get()
    named_by = None
    if context is not None and ref not in context[1] | trusted_references():  # else: the user named it himself
        named_by = context[0]
    return _registration(ref, named_by)


@lru_cache(maxsize=None)
def _registration(ref: str, named_by: str | None) -> Registration:
    if ref in builtin():
        return builtin()[ref]
    if ":" in ref:
        return _as_registration(load_object(ref, f"task = {ref!r}", named_by), ref)
    points = [e for e in metadata.entry_points(group=GROUP) if e.name == ref]
    if points:
        if named_by is not None:  # installed, but its module must be the installed one, not a namesake here
            why = not_installed(points[0].module)
            if why:
                raise ConfigError(f"task = {ref!r}: its entry point's module {why}; it is not imported")
        try:
            obj = points[0].load()
        except ImportError as e:
            raise ConfigError(f"task = {ref!r}: its entry point {points[0].value} cannot be imported ({e})") from None
        except Exception as e:  # noqa: BLE001 - a module that fails at import: one line
            raise ConfigError(f"task = {ref!r}: its entry point {points[0].value} raised {type(e).__name__} "
                              "at import") from None
        return _as_registration(obj, ref)
    import difflib

    known = [*builtin(), *entry_point_names()]
    close = difflib.get_close_matches(str(ref), known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"task = {ref!r} is not a task.{hint} Allowed: {', '.join(known)}, or a Task of your own as "
                      f"package.module:Object (an entry point in the group {GROUP}, or a reference)")
