"""The prepared-data store's trust model: what in a cache directory may be read.

An entry's name is a digest of public inputs (data section, file paths, sizes, contents,
library versions), so anyone who can write into a cache directory can plant an entry
under the very name a victim's run will look up, and the run would map and train on it.
The rule, enforced here before anything in the cache is read:

- the cache root, every entry and every file in an entry are owned by the running user
  (or carry the group named by `data.cache_group`, which the user thereby trusts) and are
  not writable by others (group-writable only with that group named);
- the entry lock (runlock's hard-linked lock file, prepared._locked) is never followed through
  a symlink;
- a manifest and its files are checked by `entry_format` (types field by field, plain names,
  each `.npy` header against its file) before anything is mapped; a damaged or untrusted entry
  is moved to `<root>/.aside/` (`move_aside`) and prepared again.

The content-hash memo (`source_digest`) is keyed by (dev, inode, size, mtime_ns, ctime_ns).
mtime can be set back by any writer (`touch -d`, `os.utime`), ctime cannot: the kernel sets
it to "now" on every write, chmod or utime.  So an in-place edit with size and mtime kept
still changes the key and the file is hashed again.  Why a memo and not "hash always":
hashing a 400 MB file with blake2b took 1.3 s here (shared core, page cache warm; far more
from a cold network filesystem), paid by every start of every run for a corpus that did
not change; the memo costs one stat.
"""

from __future__ import annotations

import grp
import hashlib
import json
import os
import stat
import time
import uuid
from pathlib import Path

from .entry_format import file_digest

ASIDE = ".aside"


class UntrustedCache(ValueError):
    """A cache directory, entry or file another user could have written (exit 2)."""


def _owner(uid: int) -> str:
    try:
        import pwd

        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def group_id(group: str | None) -> int | None:
    """The gid of `data.cache_group`, or None when none is named."""
    if not group:
        return None
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise UntrustedCache(f"data.cache_group: no group named {group!r} on this machine") from None


def _problem(st: os.stat_result, gid: int | None) -> str | None:
    """Why a file with this stat must not be trusted, or None."""
    mode = stat.S_IMODE(st.st_mode)
    shared = gid is not None and st.st_gid == gid
    if st.st_uid != os.geteuid() and not shared:
        return f"belongs to {_owner(st.st_uid)}, not to you"
    if mode & stat.S_IWOTH:
        return f"is writable by every user (mode {mode:o})"
    if mode & stat.S_IWGRP and not shared:
        return f"is writable by its group (mode {mode:o}) and data.cache_group does not name that group"
    return None


def check_root(root: Path, group: str | None = None) -> None:
    """Refuse a cache root another user could write into (they could plant entries)."""
    reason = _problem(os.stat(root), group_id(group))
    if reason:
        raise UntrustedCache(
            f"prepared-data cache {root} (data.cache_dir) {reason}: another user could plant data this run "
            f"would train on. Use a directory of your own (chmod go-w {root}, or set data.cache_dir), or for a "
            "team cache set data.cache_group to its group (and chgrp/chmod g+ws the directory).")


def check_folder(folder: Path, group: str | None = None) -> None:
    """A directory (not a symlink to one) of the user's (or the named group's), not writable by others."""
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode):
        raise UntrustedCache(f"{folder} is not a directory (a symlink is never followed)")
    reason = _problem(st, group_id(group))
    if reason:
        raise UntrustedCache(f"{folder} {reason}")


def check_entry(folder: Path, group: str | None = None) -> None:
    """Every part of an entry must be the user's (or the named group's) and not writable by others;
    a symlink anywhere in it is refused (it could point outside the entry)."""
    gid = group_id(group)
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode):
        raise UntrustedCache(f"{folder} is not a directory")
    reason = _problem(st, gid)
    if reason:
        raise UntrustedCache(f"{folder} {reason}")
    for child in os.scandir(folder):
        cst = child.stat(follow_symlinks=False)
        if not stat.S_ISREG(cst.st_mode):
            raise UntrustedCache(f"{child.path} is not a plain file")
        reason = _problem(cst, gid)
        if reason:
            raise UntrustedCache(f"{child.path} {reason}")


# ---------------------------------------------------------------------------
# Manifests


def move_aside(folder: Path) -> Path | None:
    """Move a damaged or untrusted entry to <root>/.aside/ (kept for a post-mortem, never read)."""
    aside = folder.parent / ASIDE
    aside.mkdir(mode=0o700, exist_ok=True)
    target = aside / f"{folder.name}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    try:
        os.rename(folder, target)
    except FileNotFoundError:
        return None
    return target


# ---------------------------------------------------------------------------
# The content-hash memo


def memo_stamp(st: os.stat_result) -> dict[str, int]:
    """What the memo is keyed by: ctime_ns changes on any write, and no user can set it back."""
    return {"dev": st.st_dev, "inode": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns}


def source_digest(path: Path, st: os.stat_result, memo_dir: Path | None) -> str:
    """`path`'s content digest, from the memo when its stamp (incl. ctime) is unchanged."""
    stamp = {"path": str(path), **memo_stamp(st)}
    memo = memo_dir / (hashlib.blake2b(str(path).encode(), digest_size=12).hexdigest() + ".json") if memo_dir else None
    if memo is not None:
        try:
            with open(memo, opener=lambda p, f: os.open(p, f | os.O_NOFOLLOW)) as f:
                saved = json.load(f)
            if isinstance(saved, dict) and {k: saved.get(k) for k in stamp} == stamp \
                    and isinstance(saved.get("digest"), str):
                return saved["digest"]
        except (OSError, ValueError):
            pass
    digest = file_digest(path)
    if memo is not None:
        try:
            from ...runfiles import write_atomic

            memo.parent.mkdir(mode=0o700, exist_ok=True)
            write_atomic(memo, json.dumps({**stamp, "digest": digest}))
        except OSError:
            pass  # only a speed-up
    return digest
