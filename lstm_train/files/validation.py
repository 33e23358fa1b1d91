"""Reading run files back: they sit in a folder others may have touched, so a malformed one is
a RunDirError naming the file and the field, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .atomic import size_text


class RunDirError(ValueError):
    """A file read back from a run directory is malformed or hand-edited wrongly (a ValueError:
    the CLI prints it and exits 2); the message names the file and the field."""


def read_json(path: Path, fields: dict[str, type | tuple[type, ...]] | None = None) -> dict[str, Any] | None:
    """A JSON object from a run file, or None when the file is missing.  A file that is there
    but is not a JSON object, or whose `fields` (name -> type) have another type, is a
    RunDirError naming the file and the field: never a traceback, never silently ignored."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_RUN_FILE + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise RunDirError(f"{path}: cannot read it ({e.strerror or e})") from None
    if len(raw) > MAX_RUN_FILE:
        raise RunDirError(f"{path}: over {size_text(MAX_RUN_FILE)}, not a file lstm_train wrote")
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise RunDirError(f"{path}: not valid JSON ({e}); restore it, or remove it to start that part over") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path}: expected a JSON object, found {type(data).__name__}")
    check_fields(path, data, fields or {})
    return data


def check_fields(path: Path, data: dict[str, Any], fields: dict[str, type | tuple[type, ...]]) -> None:
    """Each present field of `fields` has its type (a list type checks its items as strings)."""
    for name, kind in fields.items():
        if name not in data or data[name] is None:
            continue
        value = data[name]
        if kind is list:
            ok = isinstance(value, list) and all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value)
        else:
            ok = isinstance(value, kind) and not (isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)))
        if not ok:
            want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise RunDirError(f"{path}: field {name!r} should be {'a list of ids' if kind is list else want}, "
                              f"found {shorten(value)}")


# Files lstm_train writes into a run directory are small; a bigger one was put there by hand.
MAX_RUN_FILE = 64 * 1024 * 1024


def read_config(path: Path) -> dict[str, Any]:
    """A run's config.yaml as a dict; malformed -> RunDirError naming it."""
    import yaml

    from .. import yamlsafe

    path = Path(path)
    try:
        if path.stat().st_size > MAX_RUN_FILE:
            raise RunDirError(f"{path}: over {size_text(MAX_RUN_FILE)}, not a config.yaml lstm_train wrote")
        data = yamlsafe.safe_load(path.read_text(encoding="utf-8"))  # aliases bounded: an untrusted file
    except (OSError, UnicodeDecodeError) as e:
        raise RunDirError(f"{path}: cannot read it ({e})") from None
    except yaml.YAMLError as e:
        raise RunDirError(f"{path}: not valid YAML ({shorten(str(e), 200)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RunDirError(f"{path}: expected a mapping of job sections, found {type(data).__name__}")
    for section in ("train", "data", "model"):
        if section in data and not isinstance(data[section], dict):
            raise RunDirError(f"{path}: field {section!r} should be a mapping, found {shorten(data[section])}")
    return data


class Raw(str):
    """A string `shorten` shows as it is (JSON text, say), not as its repr."""


def shorten(value: Any, limit: int = 80) -> str:
    """repr(value), cut to about `limit` characters for an error message (a 1 MB CSV header or a
    pasted text must not become a 1 MB message)."""
    text = value if isinstance(value, Raw) else repr(value)
    return text if len(text) <= limit else f"{text[:limit - 20]}... ({len(text):,} characters)"
