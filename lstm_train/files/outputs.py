"""The one gate of every user-facing writer (`compare --out`, `report`, `export --out`, `jobs
copy`, `predict --output`, `bench --scaling --out`, and the files a run writes into its own
directory as it ends: `write_run_output`): a file is written only where it destroys nothing.

* Never inside a run's `checkpoints/` or `metrics/`, never over a run's own files
  (`config.yaml`, `result.json`, weights, vocabularies: any file there but a plot or an
  export), whatever `--force` says: a run directory is a folder holding `config.yaml`.
* Never through a symlink or over anything but a plain file.
* Over an existing plain file only when lstm_train wrote it (a PNG carrying our mark, written
  again by the same command) or the user passes `--force`.

The file itself is then written by `atomic.write_atomic` (a private temporary renamed over the
name: a symlink planted there meanwhile is replaced, not followed)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .atomic import write_atomic

# A run's own files: what `train` writes and reads back (`runfiles`), and any weights.
RUN_FILES = {"config.yaml", "result.json", "submission.json", "started.json", "meta.json", "lock.json"}
RUN_FOLDERS = {"checkpoints", "metrics"}
WEIGHT_SUFFIXES = (".safetensors",)  # a run's weights (export writes model.pt and model.onnx there)
OUTPUT_SUFFIXES = (".png", ".onnx", ".pt", ".onnx.json", ".pt.json")  # what may be replaced in a run directory
MARK_KEY = "Software"
MARK = "lstm_train"  # matplotlib writes metadata as PNG tEXt chunks: our PNGs say who wrote them


class OutputRefused(ValueError):
    """An output would replace something it must not (a ValueError: exit 2, one line)."""


def _run_dir(folder: Path) -> bool:
    return (folder / "config.yaml").is_file()


def refuse_reason(path: Path) -> str | None:
    """Why nothing may ever be written at `path` (even with --force), or None: a run's own file
    (a listed one, weights, or any existing file of a run directory but an output's: a plot,
    an export and its sidecar), or anything inside its checkpoints/ or metrics/."""
    real = Path(os.path.realpath(path))
    if _run_dir(real.parent) and (real.name in RUN_FILES or real.name.endswith(WEIGHT_SUFFIXES) or (
            os.path.lexists(path) and not real.name.endswith(OUTPUT_SUFFIXES))):
        return f"{real.name} is a file of the run {real.parent}; an output never replaces a run's own files"
    for folder in real.parents:
        if folder.name in RUN_FOLDERS and _run_dir(folder.parent):
            return f"it is inside the run's {folder.name}/ ({folder}); an output never writes there"
    return None


def check_output(path: Path, flag: str, force: bool = False, ours: bool = False) -> None:
    """Refuse (OutputRefused naming `flag` and the path) an output at `path` that would destroy
    something.  `ours`: an existing file there may be replaced when it carries our PNG mark."""
    path = Path(path)
    why = refuse_reason(path)
    if why:
        raise OutputRefused(f"{flag} {path}: {why}. Give a path outside the run's own files.")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        raise OutputRefused(f"{flag} {path}: {path} exists; not overwriting it: it is a symlink or not a plain "
                            "file, never followed or replaced; give another path")
    if force or (ours and marked_png(path)):
        return
    raise OutputRefused(f"{flag} {path}: {path} exists; not overwriting it (pass --force to replace a file, "
                        "or give another path)")


def write_output(path: Path, data: str | bytes, flag: str, force: bool = False, ours: bool = False) -> Path:
    """`check_output`, then the atomic writer."""
    check_output(path, flag, force, ours)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(Path(path), data)
    return Path(path)


def write_run_output(run_dir: Path, name: str, data: str | bytes) -> Path:
    """A file a run writes into its own directory (test predictions, tables, plots, samples),
    again whenever a run reaches that point: `name` a plain file name, never one of the run's own
    files (config.yaml, result.json, weights) nor its checkpoints/ or metrics/.  Written by the
    atomic writer, so what is at that name (an earlier copy, a symlink someone planted) is
    replaced, never followed; anything else there (a folder) is refused, naming it."""
    if Path(name).name != name or name in RUN_FILES | RUN_FOLDERS or name.endswith(WEIGHT_SUFFIXES):
        raise ValueError(f"{name!r} is not a name a run's output may have")  # a programming error, not a user's
    path = Path(run_dir) / name
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        raise OutputRefused(f"{path} exists and is not a plain file; the run writes its {name} there and never "
                            "replaces a folder: move it away and run the same command again")
    write_atomic(path, data)
    return path


def png_bytes(fig: object, **savefig: object) -> bytes:
    """A matplotlib figure as PNG bytes carrying our mark (so that the same command may write it again)."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={MARK_KEY: MARK}, **savefig)  # type: ignore[attr-defined]
    return buffer.getvalue()


def marked_png(path: Path, limit: int = 1 << 16) -> bool:
    """Whether `path` is a PNG whose tEXt chunks (before the image data; at most `limit` bytes
    read) say lstm_train wrote it."""
    try:
        with open(path, "rb", opener=lambda p, f: os.open(p, f | os.O_NOFOLLOW)) as f:
            head = f.read(limit)
    except OSError:
        return False
    if not head.startswith(b"\x89PNG\r\n\x1a\n"):
        return False
    at = 8
    while at + 8 <= len(head):
        length, kind = int.from_bytes(head[at:at + 4], "big"), head[at + 4:at + 8]
        if kind == b"IDAT":
            return False
        if kind == b"tEXt" and head[at + 8:at + 8 + length] == f"{MARK_KEY}\0{MARK}".encode("latin1"):
            return True
        at += 12 + length
    return False
