"""Prepared data: a task's `load_data` output written once, memory-mapped by every rank.

Reading and tokenizing the user's files is the slow, memory-hungry part of a start:
every rank of every run (and of every requeue) did it again and held its own copy.
Here it is done once per distinct input: the `Splits` go to a directory of `.npy`
files (one per dense column; values, offsets and lengths per `Ragged` column) plus a
`manifest.json` (shapes, dtypes, sizes, the JSON `info`).  Every rank then opens the
arrays with `numpy.load(mmap_mode="c")`: the pages live once in the OS page cache,
shared by all processes on the node, and a batch touches only the pages it gathers.
Copy-on-write ("c") rather than read-only ("r"): torch wants writable arrays, and a
stray in-place write then costs one private page instead of a crash or a corrupted cache.

Why numpy `.npy` and not Arrow: the columns are already flat arrays (`Ragged` is an
Arrow list layout in all but name), `np.load(mmap_mode=...)` plus `torch.from_numpy`
maps them with no copy and no dependency, and a measured map of the same 400 MB of
token ids took about the same time either way (scripts/bench_prepared.py --formats);
Arrow would add a conversion step per column for nothing the loop uses.

The entry's name is a digest of everything the output depends on: the source files
(path, size, mtime and a content hash), the task's data section (tokenizer settings
included), the versions of the tokenizer libraries, `FORMAT_VERSION` and the task's
`entry_revision` where it has one.  An edited file or a changed option therefore prepares
a new entry; nothing stale is read.
Entries are written into a temporary directory and renamed into place, under a lock
file, so a crash, a full disk or two jobs preparing at once never leave an entry a
later run would trust.  An entry that fails its checks (truncated file, another
format version, a manifest whose key is not its name) is prepared again, with a note.

One concern, over 500 lines: the store's entry life cycle (key, write, check, map, lock);
writing columns in chunks lives in `entry_format.py`.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ... import runlock
from ...messages import note
from . import trust, runner
from .entry_format import progress_bytes
from ..ragged import Ragged

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_HASH_CHUNK = 8 << 20


class PreparedDataError(ValueError):
    """Prepared data that cannot be made or read (a user-fixable condition: exit 2)."""


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
# Writing


def _save_array(folder: Path, name: str, tensor: Any) -> dict[str, Any]:
    from .entry_format import save_array

    return save_array(folder, name, tensor)


def _encode_info(value: Any, folder: Path, counter: list[int]) -> Any:
    """`info` as JSON; tensors and arrays in it go to their own .npy files."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        counter[0] += 1
        tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value))
        return {"__array__": _save_array(folder, f"info{counter[0]}", tensor)}
    if isinstance(value, dict):
        return {str(k): _encode_info(v, folder, counter) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode_info(v, folder, counter) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise PreparedDataError(f"Splits.info holds a {type(value).__name__}, which prepared data cannot store "
                            "(JSON values, tensors and arrays only)")


def _new_manifest(key: str, task_name: str, sources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"format": FORMAT_VERSION, "key": key, "task": task_name, "sources": sources,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "splits": {}}


def _close_entry(folder: Path, manifest: dict[str, Any], info: Any) -> dict[str, Any]:
    manifest["info"] = _encode_info(info, folder, [0])
    manifest["bytes"] = sum(p.stat().st_size for p in folder.iterdir())
    with open(folder / MANIFEST, "w") as f:  # last: an entry without a manifest is never read
        json.dump(manifest, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    return manifest


# ---------------------------------------------------------------------------
# Reading


class StaleEntry(Exception):
    """An entry that must not be read (the reason is the message)."""


def read_manifest(folder: Path, key: str) -> dict[str, Any]:
    """The entry's manifest, checked: format version, key, every file present with its size."""
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise StaleEntry(f"no {MANIFEST} (an interrupted preparation)") from None
    except (OSError, ValueError) as e:
        raise StaleEntry(f"unreadable {MANIFEST} ({e})") from None
    if not isinstance(manifest, dict):  # trust(27)
        raise trust.DamagedEntry(f"{MANIFEST} holds a {type(manifest).__name__}, not an object")
    if manifest.get("format") != FORMAT_VERSION:
        raise StaleEntry(f"format version {manifest.get('format')!r}, this lstm_train reads {FORMAT_VERSION}")
    if manifest.get("key") != key:
        raise StaleEntry(f"its digest {manifest.get('key')!r} is not the one of its inputs ({key})")
    trust.validate_manifest(manifest, folder)  # trust(27): types, plain names, .npy headers vs sizes
    return manifest


def _map_array(folder: Path, spec: dict[str, Any]) -> torch.Tensor:
    path = folder / spec["file"]
    try:
        array = np.load(path, mmap_mode="c", allow_pickle=False) if spec["bytes"] > 128 + 8 else \
            np.load(path, allow_pickle=False)
    except ValueError as e:  # an empty array cannot be mapped; a damaged header
        if "empty" in str(e) or "cannot mmap" in str(e):
            array = np.load(path, allow_pickle=False)
        else:
            raise StaleEntry(f"{path.name}: {e}") from None
    if str(array.dtype) != spec["dtype"] or list(array.shape) != spec["shape"]:
        raise StaleEntry(f"{path.name}: {array.dtype} {list(array.shape)}, the manifest says "
                         f"{spec['dtype']} {spec['shape']}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


def _decode_info(value: Any, folder: Path) -> Any:
    if isinstance(value, dict):
        if "__array__" in value:
            return _map_array(folder, value["__array__"]).clone()
        return {k: _decode_info(v, folder) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_info(v, folder) for v in value]
    return value


def map_entry(folder: Path, manifest: dict[str, Any]) -> Any:
    """The entry's Splits, every column memory-mapped (no copy of the data)."""
    from ..splits import Splits

    splits: dict[str, Any] = {}
    for name, columns in manifest["splits"].items():
        if columns is None:
            splits[name] = None
            continue
        out = []
        for column in columns:
            if column["kind"] == "ragged":
                out.append(Ragged(_map_array(folder, column["values"]), _map_array(folder, column["offsets"]),
                                  _map_array(folder, column["lengths"])))
            else:
                out.append(_map_array(folder, column))
        splits[name] = tuple(out)
    return Splits(train=splits["train"], test=splits["test"], val=splits.get("val"),
                  info=_decode_info(manifest["info"], folder))


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
            except (trust.DamagedEntry, trust.UntrustedCache) as reason:  # trust(27)
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
        manifest = _new_manifest(entry.key, task.name, entry.sources)
        manifest["splits"] = splits
        manifest = _close_entry(tmp, manifest, info)
        changed = [p for p, stamp in _stamps(entry).items() if stamp != before[p]]
        if changed:
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
            raise PreparedDataError(f"disk full while preparing data in {entry.folder.parent} (data.cache_dir): "
                                    "nothing was stored. Free space or point data.cache_dir elsewhere.") from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    runner.clean(work)
    seconds = time.perf_counter() - started
    note(f"prepared data: {entry.folder} ({_size(manifest['bytes'])}) in {seconds:.1f} s")
    return manifest


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
        except (StaleEntry, trust.DamagedEntry):  # trust(27)
            pass  # not there yet, or a stale one rank 0 is about to replace
        if time.monotonic() > deadline:
            raise PreparedDataError(
                f"rank {accelerator.process_index} waited {timeout:.0f} s (data.prepare_timeout) for rank 0 to "
                f"prepare {folder}; it never appeared. data.cache_dir must be a directory every node sees; "
                "or prepare beforehand with `lstm-train prepare JOB.yaml`.")
        time.sleep(0.2)
    return task.view(map_entry(folder, manifest))
