"""Running a task's `Stream` on every core of this machine, or as a SLURM job array.

The two passes of a `Stream` (`data/streams/base.py`) are map steps over pieces: `scan` and
`encode` of one piece need nothing of another, only `plan` (run once, here) joins them.
So they run as

* this process (`workers=1`, or a stream whose `in_process` is true: the default stream's
  `load_data` may use torch): the pieces in order, encoded straight into the entry;
* worker processes (`workers=K`, default: every core this process may use, at most one per
  piece), one piece at a time each; a stream of one piece too, in one worker.  The process that
  prepares is the heaviest in the tree (the CLI with the task imported, a training rank with
  torch and its model): a piece's work done in it adds to all that (`bench_corpora.py prepare`,
  peak RSS: a 10.8 MB CSV 806 MiB prepared here, 703 MiB in one worker; 40.5 MB 915 and 704), and
  what its allocators freed would stay with it.  Processes, not threads: the scan and encode of characters and words are
  numpy and Python code that holds the GIL; `tokenizers` (BPE) runs its own Rust threads
  inside a worker, so each worker is given `RAYON_NUM_THREADS` = its share of the cores;
* a SLURM job array through submitit (`executor="slurm"`, `shards=N`): array task i scans,
  then encodes, shard i (a run of consecutive pieces), on whichever nodes the array gets.

Every unit of work (a piece locally, a shard on SLURM) writes its columns into a folder of
the entry's work directory (`<entry>.shards/unit-NNNNN/`) with a `done.json` naming the plan
it encoded with, its pieces and the blake2b digest of every file it wrote.  Before the merge
each unit is checked (`check_unit`): its record by type, its file names plain names in its
folder (no `/`, `..`, symlink), every file its own (`trust`), its `.npy` header as
recorded and its digest as recorded; a unit that fails (replaced after an interruption,
planted) is encoded again, never merged.  The columns are then concatenated in piece order into
the entry (`entry_format.merge`: `os.copy_file_range`, ragged offsets rebased in chunks).  Because a
piece's output does not depend on which unit encodes it, the entry is byte for byte the
same from 1 shard or N.  A failed unit leaves the others' folders: the next preparation
redoes only the units without a `done.json` for the same plan.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import os
import re
import shutil
import tempfile
import sys
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from ...files.atomic import write_atomic
from ...messages import note
from . import trust
from .entry_format import DamagedEntry, EntryWriter, array_specs, check_header, file_digest, merge, on_threads
from ..streams.base import Piece, Stream, combine


class ShardError(RuntimeError):
    """A unit of a preparation failed: the message names it (and its SLURM log)."""


@dataclass
class Options:
    """How to run a stream: `workers` processes here, or `shards` SLURM array tasks (`executor`)."""

    workers: int = 0  # 0: every core this process may use
    shards: int | None = None  # SLURM: array tasks; local: ignored (one piece a unit)
    executor: str = "local"  # local | slurm
    slurm: Callable[[Path], Any] | None = None  # folder -> a submitit executor (the CLI makes it from the job)
    group: str | None = None  # data.cache_group: whose unit files are trusted besides the user's


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _digest(value: Any) -> str:
    return hashlib.blake2b(json.dumps(value, sort_keys=True).encode(), digest_size=12).hexdigest()


def _write_json(path: Path, value: Any) -> None:
    write_atomic(path, json.dumps(value))  # the one atomic writer (private temporary, no symlink followed)


_MAX_DONE = 16 << 20  # a done record lists a unit's files and counts: small


def _read_done(folder: Path, plan_digest: str) -> dict[str, Any] | None:
    """A unit's done record for this plan (not yet checked: `check_unit`), or None. Never read
    through a symlink, never more than _MAX_DONE bytes."""
    try:
        fd = os.open(folder / "done.json", os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            done = json.loads(f.read(_MAX_DONE + 1))
    except (OSError, ValueError):
        return None
    return done if isinstance(done, dict) and done.get("plan") == plan_digest else None


def unit_files(splits: dict[str, Any]) -> list[dict[str, Any]]:
    """The array records of a unit's "splits" record (each checked by type, its name a plain name)."""
    return array_specs({"splits": splits})


def check_unit(folder: Path, done: dict[str, Any], pieces: list[Piece], group: str | None = None) -> str | None:
    """Why a unit's folder must not be merged, or None: its record by type, its pieces the ones
    planned, its folder and files plain, its own and not writable by others, every file named
    by a plain name inside it with the header and the digest its worker recorded."""
    try:
        if not isinstance(done.get("splits"), dict) or set(done["splits"]) - {"train", "val", "test"}:
            return "its record's splits are malformed"
        if done.get("pieces") != [p.index for p in pieces]:
            return "its record names other pieces than the plan gives it"
        counts = done.get("counts")
        if not isinstance(counts, list) or len(counts) != len(pieces) or not all(isinstance(c, dict) for c in counts):
            return "its record's counts are malformed"
        digests = done.get("digests")
        if not isinstance(digests, dict):
            return "its record has no digests"
        trust.check_entry(folder, group)  # a directory of plain files, the user's, not writable by others
        for spec in unit_files(done["splits"]):
            path = folder / spec["file"]
            check_header(path, spec)
            if not isinstance(digests.get(spec["file"]), str) or file_digest(path) != digests[spec["file"]]:
                return f"{spec['file']} is not the file its worker wrote (its digest differs)"
    except (DamagedEntry, trust.UntrustedCache) as e:
        return str(e)
    except OSError as e:
        return f"cannot read it ({e.strerror or e})"
    return None


# ---------------------------------------------------------------------------
# Units of work (module-level: they run in worker processes and SLURM array tasks)


def scan_unit(stream: Stream, pieces: list[Piece]) -> dict[str, Any]:
    return functools.reduce(combine, (stream.scan(piece) for piece in pieces))


def encode_unit(stream: Stream, pieces: list[Piece], plan: dict[str, Any], folder: str, plan_digest: str) -> dict:
    """Encode `pieces` into `folder` (emptied first) and mark it done."""
    out = Path(folder)
    if out.is_symlink():  # planted: removed, never followed
        out.unlink()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    writer = EntryWriter(out, durable=False)  # a unit's files are copied into the entry, which is synced
    counts = [stream.encode(piece, plan, writer) for piece in pieces]
    splits = writer.close()
    digests = {spec["file"]: file_digest(out / spec["file"]) for spec in unit_files(splits)}
    done = {"plan": plan_digest, "pieces": [p.index for p in pieces], "counts": counts, "splits": splits,
            "digests": digests}
    _write_json(out / "done.json", done)
    return done


def _worker_init(threads: int) -> None:
    os.environ["RAYON_NUM_THREADS"] = str(threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "true"


# ---------------------------------------------------------------------------
# Running


def run(stream: Stream, entry_tmp: Path, work: Path, options: Options,
        bar: Callable[[int], None] = lambda n: None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The stream prepared into `entry_tmp` (an empty, not yet existing folder): returns
    (the manifest's "splits" record, info).  `bar(nbytes)` is told as pieces are done."""
    pieces = stream.pieces()
    workers = max(1, min(options.workers or cores(), len(pieces)))
    if options.executor != "slurm" and (options.workers == 1 or getattr(stream, "in_process", False)):
        entry_tmp.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".scratch-", dir=entry_tmp.parent) as scratch:
            stream.scratch = scratch  # type: ignore[attr-defined]
            return _inline(stream, pieces, entry_tmp, bar)
    work.mkdir(parents=True, exist_ok=True)
    trust.check_folder(work, options.group)  # the units' home: a directory of the user's, not a symlink
    stream.scratch = str(work / "scratch")  # type: ignore[attr-defined]  (every node sees the work dir)
    units = _units(pieces, options.shards if options.executor == "slurm" else len(pieces))
    with (_SlurmRunner(options.slurm, work / "logs") if options.executor == "slurm" else _PoolRunner(workers)) as runner:
        return _passes(stream, pieces, units, runner, entry_tmp, work, bar, options.group)


def _passes(stream: Stream, pieces: list[Piece], units: list[list[Piece]], runner: Any, entry_tmp: Path, work: Path,
            bar: Callable[[int], None], group: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    plan = stream.plan(runner(scan_unit, [(stream, unit) for unit in units], "scan", units, bar=None,
                              combine=combine))
    plan_digest = _digest(plan)
    _write_json(work / "plan.json", {"digest": plan_digest})
    folders = [work / f"unit-{i:05d}" for i in range(len(units))]
    todo = [i for i, folder in enumerate(folders) if _read_done(folder, plan_digest) is None]
    encoded: set[int] = set()
    while True:
        runner(encode_unit, [(stream, units[i], plan, str(folders[i]), plan_digest) for i in todo], "encode",
               [units[i] for i in todo], bar=bar)
        encoded.update(todo)
        dones = [_read_done(folder, plan_digest) for folder in folders]
        problems = dict(enumerate(_check_units(folders, dones, units, group)))
        bad = [i for i, why in problems.items() if why]
        if not bad:
            break
        if any(i in encoded for i in bad):  # written just now by our own workers, and still wrong
            raise ShardError("; ".join(f"unit {folders[i]}: {problems[i]}" for i in bad if i in encoded))
        for i in bad:  # left by an interrupted preparation, then changed: encoded again, never merged
            note(f"prepared data: {folders[i]} from an earlier, interrupted preparation is not merged "
                 f"({problems[i]}); encoding it again")
        todo = bad
    splits = merge([(folder, done["splits"]) for folder, done in zip(folders, dones)], entry_tmp)
    counts = [c for done in dones for c in done["counts"]]
    return splits, stream.info(plan, counts)


def _check_units(folders: list[Path], dones: list[dict[str, Any] | None], units: list[list[Piece]],
                 group: str | None) -> list[str | None]:
    """`check_unit` of every unit (None: fine), on threads: reading and hashing the files release
    the GIL, so the units' digests are taken on every core, not one after another."""
    def check(i: int) -> str | None:
        done = dones[i]
        return "it has no done.json after encoding" if done is None else check_unit(folders[i], done, units[i], group)

    return on_threads(check, list(range(len(folders))), cores())


def _inline(stream: Stream, pieces: list[Piece], entry_tmp: Path, bar: Callable[[int], None]
            ) -> tuple[dict[str, Any], dict[str, Any]]:
    plan = stream.plan(scan_unit(stream, pieces))
    entry_tmp.mkdir(parents=True)
    writer = EntryWriter(entry_tmp)
    counts = []
    for piece in pieces:
        counts.append(stream.encode(piece, plan, writer))
        bar(_size(piece))
    return writer.close(), stream.info(plan, counts)


def _size(piece: Piece) -> int:
    end = piece.end if piece.end is not None else os.path.getsize(piece.path)
    return max(0, end - piece.start)


def _units(pieces: list[Piece], n: int | None) -> list[list[Piece]]:
    """Consecutive pieces in `n` runs of about equal bytes (at least one piece each)."""
    n = max(1, min(n or 1, len(pieces)))
    if n == len(pieces):
        return [[piece] for piece in pieces]
    total = sum(map(_size, pieces)) or 1
    units: list[list[Piece]] = [[] for _ in range(n)]
    done = 0
    for piece in pieces:
        k = min(n - 1, done * n // total)
        units[k].append(piece)
        done += _size(piece)
    return [u for u in units if u]


class _PoolRunner:
    """Units on worker processes here, forked as the DataLoader forks its workers (no re-import of the
    caller's __main__; started at the first scan, before BPE training starts tokenizers' threads)."""

    def __init__(self, workers: int) -> None:
        threads = max(1, cores() // workers)
        self.pool = ProcessPoolExecutor(workers, mp_context=get_context("fork"), initializer=_worker_init,
                                        initargs=(threads,))
        self.frozen = False

    def __enter__(self) -> _PoolRunner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self.frozen:
            gc.unfreeze()

    def _fork(self) -> None:
        """Before the first submit (which forks every worker): the parent's objects moved out of the
        collector's reach (`gc.freeze`), so that a worker's collections do not walk the whole
        inherited heap (the CLI's torch and task imports), writing to, and so copying, its pages."""
        if not self.frozen:
            gc.freeze()
            self.frozen = True

    def __call__(self, fn: Callable[..., Any], calls: list[tuple], what: str, units: list[list[Piece]],
                 bar: Callable[[int], None] | None, combine: Callable[[Any, Any], Any] | None = None) -> Any:
        """Every call's result, or with `combine` the results joined as they arrive (each
        dropped once joined: memory holds one)."""
        if not calls:
            return []
        self._fork()
        futures = [self.pool.submit(fn, *call) for call in calls]
        index = {future: i for i, future in enumerate(futures)}
        results: list[Any] = [None] * len(futures)
        joined = None
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in finished:
                error = future.exception()
                if error is not None:
                    for other in pending:
                        other.cancel()
                    raise error
                i = index.pop(future)
                if bar is not None:
                    bar(sum(map(_size, units[i])))
                if combine is not None:  # joined at once: no result kept
                    joined = future.result() if joined is None else combine(joined, future.result())
                else:
                    results[i] = future.result()
        return joined if combine is not None else results


class _SlurmRunner:
    """Units as one SLURM job array (submitit), waited for here; a failure names its task and log."""

    def __init__(self, make: Callable[[Path], Any] | None, logs: Path) -> None:
        if make is None:
            raise ShardError("executor slurm: no SLURM executor given (lstm-train prepare --executor slurm makes one "
                             "from the job's slurm: section)")
        self.executor, self.results = make(logs), logs.parent / "results"

    def __enter__(self) -> _SlurmRunner:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def __call__(self, fn: Callable[..., Any], calls: list[tuple], what: str, units: list[list[Piece]],
                 bar: Callable[[int], None] | None, combine: Callable[[Any, Any], Any] | None = None) -> Any:
        if not calls:
            return []
        folder = self.results / what
        outs = [str(folder / f"{i:05d}.json") for i in range(len(calls))]
        jobs = self.executor.map_array(json_unit, [fn] * len(calls), outs, calls)
        print(f"prepared data: {what} as SLURM job array {jobs[0].job_id.split('_')[0]} ({len(jobs)} tasks)",
              file=sys.stderr, flush=True)
        results: list[Any] = []
        for i, (job, out) in enumerate(zip(jobs, outs)):
            job.wait()  # the state only: the outcome is read from our JSON, never from submitit's result pickle
            try:
                result = json.loads(Path(out).read_text())
            except (OSError, ValueError):
                for other in jobs[i + 1:]:
                    other.cancel(check=False)
                raise ShardError(f"{what} of shard {i} ({units[i][0].describe()} ...) failed as SLURM job "
                                 f"{job.job_id}: {_remote_error(_log_text(job.paths.stderr)) or 'no result'}; its log: "
                                 f"{job.paths.stderr}") from None
            results = [combine(results[0], result) if results else result] if combine is not None else \
                [*results, result]
            if bar is not None:
                bar(sum(map(_size, units[i])))
        return results[0] if combine is not None else results


def json_unit(fn: Callable[..., Any], out: str, call: tuple) -> None:
    """An array task: `fn(*call)`, its result written as JSON where the submitting side reads it."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    _write_json(Path(out), fn(*call))


def _log_text(path: Path) -> str:
    try:
        return Path(path).read_text(errors="replace")[-20000:]
    except OSError:
        return ""


def _remote_error(text: str) -> str:
    """The error a failed array task raised (`SomeError: message`, module path dropped), from the
    traceback submitit hands back."""
    found = re.findall(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception)): (.*)$", text, re.M)
    return f"{found[-1][0]}: {found[-1][1]}" if found else ""


def clean(work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)
