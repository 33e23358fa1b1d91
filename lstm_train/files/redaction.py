"""What of a job may be written where others can read it: credentials redacted by their names."""

from __future__ import annotations

import re
from typing import Any

REDACTED = "<redacted>"
# A key that names a credential: one of its words (split at _ - .) is one of these
# (api_key, WANDB_API_KEY, HF_TOKEN, client_secret, password; not tokenizer or max_tokens).
_CREDENTIAL_WORDS = {"key", "apikey", "token", "secret", "password", "passwd", "credential", "credentials"}
# Inside a string (a shell line of slurm.setup, an sbatch option): NAME=value or NAME: value.
_ASSIGNMENT = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|\S+)")


def is_credential(name: str) -> bool:
    """Whether a key or variable name looks like a credential's."""
    return any(w in _CREDENTIAL_WORDS for w in re.split(r"[_\-.]", name.lower()))


def redact(value: Any) -> Any:
    """A copy of a job dict (or any JSON-like value) with credentials replaced by <redacted>:
    the value of every key that looks like one, and `NAME=value` inside strings where NAME does."""
    if isinstance(value, dict):
        return {k: REDACTED if isinstance(k, str) and is_credential(k) and v not in (None, "", [], {})
                and not isinstance(v, (dict, bool)) else redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return _ASSIGNMENT.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}" if is_credential(m.group(1))
                               else m.group(0), value)
    return value


def credential_lines(lines: list[str]) -> list[str]:
    """The variable names that shell lines (slurm.setup) set to a credential."""
    return [m.group(1) for line in lines for m in _ASSIGNMENT.finditer(str(line))
            if is_credential(m.group(1)) and m.group(3) != REDACTED]
