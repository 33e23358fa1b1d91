"""The job specs shipped with the package: `lstm-train jobs`, `jobs copy`, and job names
where a path is expected (`lstm-train run mnist_lstm`).

The files live in the checkout's `jobs/` folder (the one the README's commands name);
`lstm_train/jobs` links to it, so the wheel carries them as package data and an
installed package finds them next to its code.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import yaml

from . import yamlsafe
from .schema import ConfigError


def shipped_dir() -> Path:
    return Path(str(resources.files("lstm_train") / "jobs"))


def shipped() -> dict[str, Path]:
    """Name (the file's stem) -> path of every shipped job."""
    folder = shipped_dir()
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))} if folder.is_dir() else {}


def find_job(job: str) -> str:
    """`job` itself when it names a file (or looks like a path); else the shipped job of that
    name (`mnist_lstm` or `mnist_lstm.yaml`).  An unknown name is left for `load_job` to
    report, with the shipped names listed."""
    path = Path(job)
    if path.exists() or len(path.parts) > 1:
        return job
    found = shipped().get(path.name.removesuffix(".yaml"))
    if found is None:
        raise ConfigError(f"{job}: {not_found_hint(job)}")
    return str(found)


def not_found_hint(job: str) -> str:
    names = ", ".join(shipped())
    return f"not a file, nor a shipped job (`lstm-train jobs` lists them: {names})" if names else "not a file"


def summary(path: Path) -> str:
    """`name  task  dataset  what it shows`: the first line of the file's leading comment."""
    text = path.read_text()
    spec = yamlsafe.safe_load(text) or {}
    data = spec.get("data") or {}
    task = spec.get("task", "classify")
    dataset = data.get("dataset") or data.get("source") or data.get("format") or ("conllu" if task == "tag" else "files")
    comment = next((ln.lstrip("# ").strip() for ln in text.splitlines() if ln.startswith("#") and ln.strip("# ")), "")
    return f"{path.stem:<26} {task:<14} {dataset:<14} {comment}"


def listing() -> list[str]:
    return [f"{'job':<26} {'task':<14} {'dataset':<14} what it shows"] + [summary(p) for p in shipped().values()]


def copy(name: str, dest: str | None = None, force: bool = False) -> Path:
    """Write shipped job `name` to `dest` (a file, or a folder: NAME.yaml in it; default
    ./NAME.yaml) to edit; an existing file is overwritten only with `force` (`files.outputs`)."""
    source = shipped().get(name.removesuffix(".yaml"))
    if source is None:
        raise ConfigError(f"{name!r} is not a shipped job; shipped: {', '.join(shipped())}")
    target = Path(dest) if dest else Path(source.name)
    if (dest or "").endswith(("/", os.sep)) or target.is_dir():  # `DEST/`: a folder, made if missing
        target.mkdir(parents=True, exist_ok=True)
        target = target / source.name
    from .files.outputs import write_output  # never over a file (a dangling symlink too) without force

    return write_output(target, source.read_text(encoding="utf-8"), "jobs copy", force)
