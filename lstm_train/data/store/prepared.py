"""The store: where a task's prepared entry lives, who prepares it, and how every rank loads it.

Reading and tokenizing the user's files is the slow, memory-hungry part of a start:
every rank of every run (and of every requeue) did it again and held its own copy.
Here it is done once per distinct input, into an entry (`entry_format`: `.npy` columns
and a manifest) that every rank memory-maps: the pages live once in the page cache.

- key (`entry_key`): the entry's name is a digest of everything the output depends on: the
  source files (path, size, mtime and a content hash, memoised by `trust.source_digest`), the
  task's data section (tokenizer settings included), the versions of the tokenizer libraries,
  `FORMAT_VERSION` and the task's `entry_revision` where it has one.  An edited file or a
  changed option therefore prepares a new entry; nothing stale is read.
- lock (`_locked`): one preparation per entry at a time, across nodes: the run lock's
  hard-linked lock file (runlock.py), not flock, which is unreliable on NFS/Lustre.
- locate / ensure / prepare: the entry is prepared by the task's `Stream` (`runner`: every
  core, or a SLURM job array) into a temporary directory and renamed into place, so a crash,
  a full disk or two jobs preparing at once never leave an entry a later run would trust.  An
  entry that fails its checks (truncated file, another format version, a manifest whose key is
  not its name; untrusted: `trust`) is prepared again, with a note.
- load: the main process prepares if needed, every rank maps.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ... import runlock
from ...messages import is_main_process, note
from . import runner, trust
from .entry_format import (FORMAT_VERSION, DamagedEntry, PreparedDataError, StaleEntry, close_entry, map_entry,
                           new_manifest, read_manifest)


def default_cache_dir() -> Path:
    """`data.cache_dir` default: $LSTM_TRAIN_CACHE, else the user's cache directory
    ($XDG_CACHE_HOME or ~/.cache)/lstm_train/prepared.  Not beside the data: shared
    datasets (/work/shared/data, a lab's read-only copy) are often not writable, and one
    user's options should not litter them.  On a cluster the home directory is the one
    every node sees; point data.cache_dir at scratch for large corpora."""
    if os.environ.get("LSTM_TRAIN_CACHE"):
        return Path(os.environ["LSTM_TRAIN_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "lstm_train" / "prepared"


def cache_dir_of(job: Any) -> Path:
    configured = getattr(job.data, "cache_dir", None)
    return Path(configured).expanduser() if configured else default_cache_dir()


# ---------------------------------------------------------------------------
# The key


def source_record(path: Path, memo_dir: Path | None) -> dict[str, Any]:
    """Path, size, mtime and content digest of one source file.  The digest is memoised
    per (path, dev, inode, size, mtime, ctime) in the cache directory (trust.source_digest), so a second start does not read
    a multi-gigabyte corpus only to find it unchanged."""
    path = path.expanduser().resolve()
    try:
        st = path.stat()
    except FileNotFoundError:  # the task's load_data names it, in its own words
        return {"path": str(path), "missing": True}
    digest = trust.source_digest(path, st, memo_dir)  # trust(27): memo keyed incl. ctime_ns
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "digest": digest}


def _library_versions() -> dict[str, str]:
    """Tokenizer libraries whose output the entry holds: a new version may cut differently."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("tokenizers", "sentencepiece", "numpy"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def data_settings(job: Any) -> dict[str, Any]:
    """The data section as the key sees it: how batches are cut and where the cache lives do not
    change the data."""
    from ...schema import SequenceData

    batching = set(SequenceData.model_fields) - {"root"}  # how batches are cut, where the cache is
    return {k: v for k, v in job.data.model_dump(mode="json").items() if k not in batching}


def entry_key(task: Any, sources: list[Path], memo_dir: Path | None) -> tuple[str, list[dict[str, Any]]]:
    records = [source_record(p, memo_dir) for p in sources]
    described = {
        "format": FORMAT_VERSION, "task": task.name, "data": data_settings(task.job),
        "libraries": _library_versions(), "sources": sorted(records, key=lambda r: r["path"]),
    }
    revision = task.entry_revision() if hasattr(task, "entry_revision") else {}
    if revision:  # only where a task changed how it prepares: every other entry keeps its name
        described["revision"] = revision
    blob = json.dumps(described, sort_keys=True, default=str).encode()
    return hashlib.blake2b(blob, digest_size=16).hexdigest(), records


# ---------------------------------------------------------------------------
# The store


@dataclass
class Entry:
    folder: Path
    key: str
    sources: list[dict[str, Any]]


def lock_path(entry: Entry) -> Path:
    """The entry's lock file, beside it (`.lock.json`: the flock file `.lock` of earlier versions
    may still be there, and is no lock of this kind)."""
    return entry.folder.with_name(entry.folder.name + ".lock.json")


@contextmanager
def _locked(lock_path: Path, what: str, timeout: float = 3600.0) -> Iterator[None]:
    """One preparation at a time per entry: the run lock's lock file (runlock.py), not flock.  The
    cache is shared by every node (NFS, Lustre), where flock depends on lockd or a mount option
    and may be silently node-local; a hard link of a fully written private file onto the lock
    name is atomic there, and the lock holds its holder (host, pid and its start, boot, SLURM
    job).  A holder that is gone (its pid on this host, its SLURM job ended) is taken over with
    a warning; a live one is waited for, said once, and given up on after `timeout`
    (data.prepare_timeout).  trust(27): a symlink at the lock's name is refused, never followed."""
    deadline = None
    while True:
        if lock_path.is_symlink():
            raise trust.UntrustedCache(f"lock file {lock_path} is a symlink (-> {os.readlink(lock_path)}); a lock "
                                            f"is never followed. Remove it (rm {lock_path}) and run again.")
        try:
            lock, holder = runlock.take(lock_path, f"no preparation of {what} is running", mode=0o640)
        except runlock.RunLocked as e:
            raise PreparedDataError(str(e)) from None
        if lock is not None:
            break
        assert holder is not None
        if deadline is None:
            note(f"prepared data: {holder.describe()} is preparing {what}; waiting for it ({lock_path})")
            deadline = time.monotonic() + timeout
        elif time.monotonic() > deadline:
            raise PreparedDataError(
                f"waited {timeout:.0f} s (data.prepare_timeout) for {holder.describe()} to prepare {what} "
                f"({lock_path}); wait for it or raise data.prepare_timeout. A holder on this host that is gone, or "
                f"whose SLURM job ended, is taken over; if it is surely gone otherwise, delete {lock_path}.")
        time.sleep(0.5)
    try:
        yield
    finally:
        lock.release()


def _writable_root(job: Any) -> Path:
    root = cache_dir_of(job)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".probe.{os.getpid()}.{uuid.uuid4().hex[:6]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise PreparedDataError(
            f"cannot write prepared data to {root} (data.cache_dir): {e.strerror or e}. "
            "Set data.cache_dir to a writable directory (on a cluster: one every node sees)."
        ) from None
    trust.check_root(root, getattr(job.data, "cache_group", None))  # trust(27)
    return root


def locate(task: Any) -> Entry | None:
    """The entry this task's data prepares into (computed, not necessarily present); None for a
    task that declares no source files (it loads directly)."""
    sources = task.source_files()
    if sources is None:
        return None
    root = _writable_root(task.job)
    files = []
    for source in map(Path, sources):  # a folder (a datasets save_to_disk directory): every file in it
        files += sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
    key, records = entry_key(task, files, root / ".sources")
    return Entry(root / f"{task.name}-{key}", key, records)


def _discard(folder: Path) -> None:
    aside = folder.with_name(f".stale-{folder.name}-{uuid.uuid4().hex[:6]}")
    try:
        folder.rename(aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def ensure(task: Any, entry: Entry, options: runner.Options | None = None) -> tuple[dict[str, Any], bool]:
    """The entry's checked manifest, preparing it first if it is missing or unusable.
    Returns (manifest, prepared_now)."""
    data = task.job.data
    timeout = float(getattr(data, "prepare_timeout", 3600))
    with _locked(lock_path(entry), entry.folder.name, timeout):
        if entry.folder.exists():
            try:
                trust.check_entry(entry.folder, getattr(data, "cache_group", None))  # trust(27)
                return read_manifest(entry.folder, entry.key), False
            except StaleEntry as reason:
                note(f"prepared data {entry.folder} is unusable ({reason}); preparing it again")
                _discard(entry.folder)
            except (DamagedEntry, trust.UntrustedCache) as reason:  # trust(27)
                aside = trust.move_aside(entry.folder)
                note(f"prepared data {entry.folder} is unusable ({reason}); moved to {aside}; preparing it again")
        return prepare(task, entry, options), True


def _stamps(entry: Entry) -> dict[str, tuple[int, int, int]]:
    out = {}
    for record in entry.sources:
        if not record.get("missing"):
            try:
                st = os.stat(record["path"])
                out[record["path"]] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            except OSError:
                out[record["path"]] = (-1, -1, -1)
    return out


def prepare(task: Any, entry: Entry, options: runner.Options | None = None) -> dict[str, Any]:
    """The task's `stream_data()` run (here on every core, or as a SLURM array: `options`) into a
    temporary directory, renamed into place once whole; the sources checked unchanged after."""
    note(f"prepared data: preparing {task.name} data into {entry.folder}")
    started = time.perf_counter()
    before = _stamps(entry)
    tmp = entry.folder.with_name(f".tmp-{entry.folder.name}-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    work = entry.folder.with_name(entry.folder.name + ".shards")
    try:
        with progress_bytes(f"preparing {task.name}") as bar:
            options = options or runner.Options()
            options.group = getattr(task.job.data, "cache_group", None)  # whose unit files are trusted
            splits, info = runner.run(task.stream_data(), tmp, work, options, bar.update)
        manifest = new_manifest(entry.key, task.name, entry.sources)
        manifest["splits"] = splits
        manifest = close_entry(tmp, manifest, info)
        changed = [p for p, stamp in _stamps(entry).items() if stamp != before[p]]
        if changed:  # units encoded from a file that changed: their key is never asked again
            runner.clean(work)
            raise PreparedDataError(f"{', '.join(changed)} changed while it was being prepared; nothing was "
                                    "stored. Run again once the file is complete.")
        os.rename(tmp, entry.folder)
    except runner.ShardError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise PreparedDataError(f"{e}; nothing was stored (the shards done are kept in {work}: preparing again "
                                "redoes only the others)") from None
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        # numpy reports a short write as a bare OSError ("N requested and M written")
        if e.errno in (errno.ENOSPC, errno.EDQUOT) or (e.errno is None and "requested and" in str(e)):
            runner.clean(work)  # the units' space given back: the disk is full
            raise PreparedDataError(f"disk full while preparing data in {entry.folder.parent} (data.cache_dir): "
                                    "nothing was stored. Free space or point data.cache_dir elsewhere.") from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    runner.clean(work)
    seconds = time.perf_counter() - started
    note(f"prepared data: {entry.folder} ({_size(manifest['bytes'])}) in {seconds:.2f} s")
    return manifest


def progress_bytes(description: str, total: int | None = None) -> Any:
    """A tqdm bar in MB/s on stderr (the main process only), told the bytes of each piece done."""
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="B", unit_scale=True, unit_divisor=1000, file=sys.stderr,
                mininterval=1.0, disable=not is_main_process(), dynamic_ncols=True)


def load(task: Any, accelerator: Any = None) -> Any:
    """The task's Splits through the store: the main process prepares if needed, every rank maps.

    Under several processes the main process computes the key and prepares; the others wait
    for the entry to appear (up to `data.prepare_timeout` seconds, with a clear message when
    it does not: typically data.cache_dir not shared between nodes), then map it."""
    if task.source_files() is None:
        return task.load_data()
    distributed = accelerator is not None and accelerator.num_processes > 1
    main = accelerator is None or accelerator.is_main_process
    if not distributed:
        entry = locate(task)
        manifest, fresh = ensure(task, entry)
        if not fresh:
            note(f"prepared data: mapping {entry.folder} ({_size(manifest['bytes'])}, prepared earlier)")
        return task.view(map_entry(entry.folder, manifest))
    from ...distributed import broadcast_object  # trust(27): JSON, never a pickle

    found: list[str] = []
    if main:
        try:
            entry = locate(task)
            found = [str(entry.folder), entry.key]
        except Exception as e:
            broadcast_object(accelerator, ["error", f"{type(e).__name__}: {e}"])
            raise
    found = broadcast_object(accelerator, found)
    if not (isinstance(found, list) and len(found) == 2 and all(isinstance(x, str) for x in found)):
        raise PreparedDataError(f"rank 0 sent a malformed prepared-data location: {found!r}")
    folder_text, key = found
    if folder_text == "error":
        raise PreparedDataError(f"rank 0 could not locate the prepared data: {key}")
    folder = Path(folder_text)
    if main:
        manifest, fresh = ensure(task, entry)
        if not fresh:
            note(f"prepared data: mapping {folder} ({_size(manifest['bytes'])}, prepared earlier)")
        return task.view(map_entry(folder, manifest))
    timeout = float(getattr(task.job.data, "prepare_timeout", 3600))
    deadline = time.monotonic() + timeout
    while True:
        try:
            manifest = read_manifest(folder, key)
            break
        except (StaleEntry, DamagedEntry):  # trust(27)
            pass  # not there yet, or a stale one rank 0 is about to replace
        if time.monotonic() > deadline:
            raise PreparedDataError(
                f"rank {accelerator.process_index} waited {timeout:.0f} s (data.prepare_timeout) for rank 0 to "
                f"prepare {folder}; it never appeared. data.cache_dir must be a directory every node sees; "
                "or prepare beforehand with `lstm-train prepare JOB.yaml`.")
        time.sleep(0.2)
    return task.view(map_entry(folder, manifest))
