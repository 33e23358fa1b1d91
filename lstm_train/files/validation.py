"""Reading run files back: they sit in a folder others may have touched, so a malformed one is
a RunDirError naming the file and the field, never a traceback."""

from __future__ import annotations

import json
import os
import stat
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
        raw = read_run_bytes(path)
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw)
    except ValueError as e:  # its line and column, never the text
        where = f"line {e.lineno}, column {e.colno}" if isinstance(e, json.JSONDecodeError) else "somewhere"
        raise RunDirError(f"{path}: not valid JSON (at {where}); restore it, or remove it to start that part "
                          "over") from None
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


def read_run_bytes(path: Path, limit: int = MAX_RUN_FILE) -> bytes:
    """The one reader of a run's files (config.yaml, JSON records, meta.json, vocabularies): a
    plain file opened without following a symlink (O_NOFOLLOW: a config.yaml pointing at another
    file of yours is refused, not read), at most `limit` bytes.  FileNotFoundError when missing;
    anything else a RunDirError naming the file, never its contents."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except OSError as e:
        if os.path.islink(path):
            raise RunDirError(f"{path}: a symlink; a run's files are read only as plain files, never through a "
                              "link (copy the file itself there)") from None
        raise RunDirError(f"{path}: cannot read it ({e.strerror or e})") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise RunDirError(f"{path}: not a plain file")
        if st.st_size > limit:
            raise RunDirError(f"{path}: over {size_text(limit)}, not a file lstm_train wrote")
        raw = f.read(limit + 1)
    if len(raw) > limit:
        raise RunDirError(f"{path}: over {size_text(limit)}, not a file lstm_train wrote")
    return raw


class RunConfig(dict):
    """A run's config.yaml as a dict, knowing the line of each key (`line_of`): errors about a file
    that may be someone else's name keys and lines, never its text (`config.validate_job`)."""

    def __init__(self, data: dict[str, Any], text: str) -> None:
        super().__init__(data)
        self._text = text

    def line_of(self, keys: tuple[Any, ...]) -> int | None:
        """The 1-based line of the key at `keys` (a path of mapping keys), or of its nearest parent."""
        import yaml

        try:
            node = yaml.compose(self._text, Loader=yaml.SafeLoader)
        except yaml.YAMLError:
            return None
        line = None
        for key in keys:
            if not isinstance(node, yaml.MappingNode):
                break
            found = next(((k, v) for k, v in node.value if getattr(k, "value", None) == str(key)), None)
            if found is None:
                break
            line, node = found[0].start_mark.line + 1, found[1]
        return line


def read_config(path: Path) -> dict[str, Any]:
    """A run's config.yaml as a dict (a `RunConfig`); malformed -> RunDirError naming it and the
    line, never quoting it (`read_run_bytes`: no symlink followed)."""
    import yaml

    from .. import yamlsafe

    path = Path(path)
    try:
        text = read_run_bytes(path).decode("utf-8")
        data = yamlsafe.safe_load(text)  # aliases bounded: an untrusted file
    except FileNotFoundError:
        raise RunDirError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RunDirError(f"{path}: cannot read it ({type(e).__name__})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        why = str(e) if isinstance(e, yamlsafe.YamlTooLarge) else getattr(e, "problem", None) or type(e).__name__
        raise RunDirError(f"{path}: not valid YAML{where} ({why})") from None
    if data is None:
        return RunConfig({}, "")
    if not isinstance(data, dict):
        raise RunDirError(f"{path}: expected a mapping of job sections, found a {type(data).__name__}")
    for section in ("train", "data", "model"):
        if section in data and not isinstance(data[section], dict):
            raise RunDirError(f"{path}: field {section!r} should be a mapping, found a {type(data[section]).__name__}")
    return RunConfig(data, text)


class Raw(str):
    """A string `shorten` shows as it is (JSON text, say), not as its repr."""


def shorten(value: Any, limit: int = 80) -> str:
    """repr(value), cut to about `limit` characters for an error message (a 1 MB CSV header or a
    pasted text must not become a 1 MB message)."""
    text = value if isinstance(value, Raw) else repr(value)
    return text if len(text) <= limit else f"{text[:limit - 20]}... ({len(text):,} characters)"
