"""One live writer per run directory: a lock file that holds on NFS and Lustre too.

Two processes writing one run directory (the same job submitted twice, a re-run
while the first is still going, a requeued job whose old copy lives on on a node
SLURM gave up on) would both resume from the same checkpoint and overwrite each
other's checkpoints, result.json and W&B run.  So the process that writes a run's
files (rank 0) holds `<run dir>/lock.json` from the moment the directory exists
until it ends, and a second writer stops with an error naming the holder.

Why a hard link and not fcntl/flock: POSIX locks over NFS depend on lockd, on
Lustre on the `flock` mount option, are silently node-local on some mounts, and
cannot say who holds them.  link(2) of a fully written private file onto the
lock name is atomic on local disks, NFS (the classic NFS-safe lock; a lost
server reply is settled by the private file's link count) and Lustre, and the
lock appears with its content: host, pid, the process's start, the host's boot
and the pid namespace (so a reused pid, a reboot or a container's own pids are
not mistaken for the holder), SLURM job id and restart count, and since when.

A lock whose holder is gone is taken over with a warning: on the same host when
the pid no longer runs (or is another process now, or the host rebooted); on
another host when the holder's SLURM job has ended (squeue, then sacct); and a
requeued SLURM job (same job id, higher SLURM_RESTART_COUNT) takes over from its
earlier incarnation whatever that one is doing.  Taking over renames the stale
file aside, which only one taker can do, and checks it moved the file it judged.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import socket
import subprocess
import time
import uuid
import warnings
from collections.abc import Callable, Mapping
import dataclasses
from pathlib import Path

from .runfiles import create_private, writing

LOCK = "lock.json"

# SLURM job states after which none of the job's processes writes any more.
SLURM_ENDED = {
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
    "OUT_OF_MEMORY", "PREEMPTED", "REVOKED", "SPECIAL_EXIT", "TIMEOUT",
}


class RunLocked(ValueError):
    """Another live process writes this run directory (a ValueError: the CLI exits 2)."""


class LockLost(RunLocked):
    """This process's lock was taken over (a requeued copy of the job runs now): stop writing."""


class StaleLockWarning(UserWarning):
    """A lock left by a process that no longer runs was taken over."""


@dataclasses.dataclass(frozen=True)
class Holder:
    """Who holds (or wants) a run directory, as recorded in its lock file."""

    host: str
    pid: int
    pid_start: str | None = None  # the process's start in clock ticks after boot: a reused pid differs
    boot_id: str | None = None  # changes when the host reboots
    pid_namespace: str | None = None  # a container with the host's name but its own pids cannot see them
    slurm_job_id: str | None = None
    slurm_restart_count: int = 0  # 0 for a job's first run, +1 per requeue
    since: str = "?"  # ISO time the lock was taken
    token: str = ""  # unique per acquisition: tells this lock from a newer one by the same process

    @classmethod
    def current(cls, environ: Mapping[str, str] | None = None) -> Holder:
        env = os.environ if environ is None else environ
        pid = os.getpid()
        return cls(
            host=socket.gethostname(),
            pid=pid,
            pid_start=process_start(pid),
            boot_id=_read("/proc/sys/kernel/random/boot_id"),
            pid_namespace=_link("/proc/self/ns/pid"),
            slurm_job_id=env.get("SLURM_JOB_ID") or None,
            slurm_restart_count=int(env.get("SLURM_RESTART_COUNT") or 0),
            since=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            token=uuid.uuid4().hex,
        )

    def describe(self) -> str:
        job = f", SLURM job {self.slurm_job_id}" if self.slurm_job_id else ""
        if self.slurm_job_id and self.slurm_restart_count:
            job += f" (restart {self.slurm_restart_count})"
        return f"pid {self.pid} on host {self.host}{job}, since {self.since}"


def stale_reason(
    holder: Holder,
    me: Holder,
    running: Callable[[int, str | None], bool] | None = None,
    job_state: Callable[[str], str | None] | None = None,
) -> str | None:
    """Why `holder` can no longer be writing (so `me` may take over), or None while it may be.

    `running(pid, start)` and `job_state(job_id)` ask this host and SLURM
    (default: `process_running`, `slurm_job_state`); asked only when needed.
    """
    running = running or process_running
    job_state = job_state or slurm_job_state
    if holder.slurm_job_id and holder.slurm_job_id == me.slurm_job_id and me.slurm_restart_count > holder.slurm_restart_count:
        return (f"it is run {holder.slurm_restart_count} of SLURM job {holder.slurm_job_id}, "
                f"which was requeued (this is run {me.slurm_restart_count})")
    if holder.host == me.host and holder.boot_id and me.boot_id and holder.boot_id != me.boot_id:
        return f"host {holder.host} has rebooted since"
    if holder.host == me.host and holder.pid_namespace == me.pid_namespace:  # its pid means the same here
        if not running(holder.pid, holder.pid_start):
            return f"pid {holder.pid} no longer runs on host {holder.host}"
        return None
    if holder.slurm_job_id:
        state = job_state(holder.slurm_job_id)
        if state == "":
            return f"its SLURM job {holder.slurm_job_id} has ended (SLURM no longer knows it)"
        if state in SLURM_ENDED:
            return f"its SLURM job {holder.slurm_job_id} has ended ({state})"
    return None  # another host (or container) and no SLURM job that says it ended: it may be writing


class RunLock:
    """The lock this process holds on one run directory."""

    def __init__(self, path: Path, holder: Holder) -> None:
        self.path, self.holder = path, holder

    @classmethod
    def acquire(cls, run_dir: Path, environ: Mapping[str, str] | None = None) -> RunLock:
        """Hold `run_dir` (which must exist), taking over a stale lock with a warning,
        or raise RunLocked naming the live holder."""
        path = Path(run_dir) / LOCK
        lock, holder = take(path, f"no run is using {run_dir}", environ)
        if lock is None:
            assert holder is not None
            raise RunLocked(
                f"{run_dir} is in use by another run: {holder.describe()} (lock {path}). "
                "Wait for it to finish or stop it, or give this run another train.output_dir "
                f"(or train.run_id). If that process is surely gone, delete {path}."
            )
        return lock

    def check(self) -> None:
        """Raise LockLost if another process has taken this run over (call before writing)."""
        holder = read_holder(self.path)
        if holder is None or holder.token != self.holder.token:
            now = holder.describe() if holder else "nobody"
            raise LockLost(f"{self.path.parent}: this process ({self.holder.describe()}) no longer holds the run; "
                           f"held now by {now}. Stopped without writing.")

    def release(self) -> None:
        """Remove the lock if it is still ours (one taken over by a requeued job stays)."""
        _remove_if(self.path, self.holder.token)


def take(path: Path, unused: str, environ: Mapping[str, str] | None = None,
         mode: int = 0o600) -> tuple[RunLock | None, Holder | None]:
    """One attempt at the lock file `path`: (our lock, None), or (None, its live holder).  A
    stale lock (`stale_reason`) is taken over with a StaleLockWarning.  An unreadable lock file
    raises RunLocked ("delete it if `unused`").  Any use of a lock file besides the run
    directory's (the prepared-data store's entry lock, `mode` 0640 so that the cache's group
    can read who holds it) goes through here."""
    me = Holder.current(environ)
    for _ in range(5):  # each pass loses only to another process that got in first
        if _create(path, me, mode):
            return RunLock(path, me), None
        holder = read_holder(path)
        if holder is None:
            if os.path.lexists(path):
                raise RunLocked(f"{path}: unreadable lock file; delete it if {unused}")
            continue  # released meanwhile
        reason = stale_reason(holder, me)
        if reason is None:
            return None, holder
        if _remove_if(path, holder.token):
            warnings.warn(f"taking over {path} from {holder.describe()}: {reason}", StaleLockWarning, stacklevel=3)
    raise RunLocked(f"{path}: other processes keep taking this lock; is the same job starting several times?")


def read_holder(path: Path) -> Holder | None:
    """The holder recorded in a lock file, or None when there is none or it is unreadable (a
    symlink at its name is not followed: unreadable)."""
    known = {f.name for f in dataclasses.fields(Holder)}
    for attempt in range(10):
        try:
            with os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)), encoding="utf-8") as f:
                record = json.loads(f.read(1 << 16))
            return _typed(Holder(**{k: v for k, v in record.items() if k in known}))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, AttributeError):
            time.sleep(0.1)  # the O_EXCL fallback writes after creating: give it a moment
    return None


_TEXT_OR_NONE = ("pid_start", "boot_id", "pid_namespace", "slurm_job_id")


def _typed(holder: Holder) -> Holder:
    """A hand-edited lock.json with fields of the wrong type is unreadable (TypeError), not a
    traceback later where a field is used (a pid compared, a host formatted)."""
    ints = (holder.pid, holder.slurm_restart_count)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in ints) \
            or not all(isinstance(v, str) for v in (holder.host, holder.since, holder.token)) \
            or not all(getattr(holder, k) is None or isinstance(getattr(holder, k), str) for k in _TEXT_OR_NONE):
        raise TypeError("lock.json: a field of the wrong type")
    return holder


def _create(path: Path, me: Holder, mode: int = 0o600) -> bool:
    """Make the lock file with our record in one atomic step; False if it already exists."""
    text = json.dumps(dataclasses.asdict(me), indent=2) + "\n"
    own = path.with_name(f".{path.name}.{me.token}")
    with writing(path, own):  # a full or read-only run directory: a clear error, nothing left behind
        with create_private(own) as f:  # O_EXCL | O_NOFOLLOW: the token is published in lock.json
            if mode != 0o600:
                os.fchmod(f.fileno(), mode)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    try:
        os.link(own, path)
        return True
    except FileExistsError:
        return os.stat(own).st_nlink == 2  # NFS: the link was made but the server's reply was lost
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        return _create_exclusive(path, text)  # a filesystem without hard links
    finally:
        own.unlink(missing_ok=True)


def _create_exclusive(path: Path, text: str) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0), 0o640)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    return True


def _remove_if(path: Path, token: str) -> bool:
    """Remove the lock file if it holds `token`, atomically against other removers:
    rename it aside (one process wins), and put it back if it turned out to be newer."""
    aside = path.with_name(f".{path.name}.{uuid.uuid4().hex}.old")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    moved = read_holder(aside)
    if moved is not None and moved.token == token:
        aside.unlink(missing_ok=True)
        return True
    try:
        os.link(aside, path)  # not the lock we judged: give it back to its holder
    except OSError:
        pass  # a third process got in first; that holder's check() will say so
    aside.unlink(missing_ok=True)
    return False


def process_start(pid: int) -> str | None:
    """When a process started (ticks after boot, from /proc), or None where /proc has no answer."""
    stat = _read(f"/proc/{pid}/stat")
    return stat.rsplit(")", 1)[1].split()[19] if stat else None


def process_running(pid: int, start: str | None) -> bool:
    """Whether `pid` runs on this host and is the process that started at `start`."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return True  # no /proc: trust kill
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0] != "Z" and (start is None or fields[19] == start)  # a zombie has ended


def slurm_job_state(job_id: str) -> str | None:
    """A SLURM job's state (`RUNNING`, `COMPLETED`, ...), "" when SLURM no longer knows the
    job, None when SLURM cannot be asked (no squeue here, controller unreachable)."""
    squeue = _ask(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"])
    if squeue is None:
        return None
    if squeue[0] == 0 and squeue[1]:
        return squeue[1]
    if squeue[0] != 0 and "invalid job id" not in squeue[2].lower():
        return None  # controller down or similar: cannot tell
    sacct = _ask(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"])  # finished jobs leave squeue
    if sacct is not None and sacct[0] == 0 and sacct[1]:
        return sacct[1]
    return ""


def _ask(command: list[str]) -> tuple[int, str, str] | None:
    """(exit code, first word of stdout, stderr) of a SLURM command, or None when it cannot run."""
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    words = out.stdout.split()
    return out.returncode, words[0] if words else "", out.stderr


def _link(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None
