"""Metrics from every worker: a JSONL file per rank (always) and W&B (when it works).

Why every rank logs
    A straggling GPU, a rank whose shard is harder, a node with slow input: all are
    invisible in rank 0's numbers.  So each global rank writes its own batch loss,
    throughput and shard test metrics next to the all-reduced (global) ones.

Local files (the source of truth)
    ``<run_dir>/metrics/rank-<R>.jsonl``: one JSON object per ``log`` call,
    ``{"step": ..., "time": <unix s>, **metrics}``; ``log_images`` adds
    ``{"step": ..., "time": ..., "images": {name: path}}``; ``finish`` writes
    ``<run_dir>/metrics/rank-<R>-summary.json``.  Written whatever W&B does, and
    appended to on resume (a resumed run repeats steps after its checkpoint; the
    later row wins, see `lstm_train.report`).

TensorBoard (opt-in: ``tracking.tensorboard: true``)
    ``<run_dir>/tensorboard/rank-<R>/``: event files written by torch's ``SummaryWriter``,
    one folder per global rank, so ``tensorboard --logdir runs`` shows every run and rank
    beside each other with no server or account.  Every numeric value of a row is a scalar
    under its own name (``loss``, ``global_loss``, ``samples``, ``val/accuracy``...) at its
    step and wall time; pictures (``log_images``) are images.  A resumed run's first
    event purges the rows its earlier attempt logged from that step on (``purge_step``), as the
    JSONL's "later row wins" does.  Opt-in rather than on by default: the JSONL files are the
    record and W&B (offline without an account) the dashboard, and a third copy of every row
    per rank costs importing TensorBoard and files on a shared filesystem that most runs never
    look at.  Its failures follow W&B's policy: one warning, then off, never a stop.

W&B layout
    * default (``tracking.wandb.shared: false``): one W&B run per global rank, named
      ``<job>-<what differs>-rank<R>`` (``mnist_lstm-hidden=128,lr=0.003-rank0``; the
      job file as it is: ``mnist_lstm-rank0``; see `runnames`), with what differs as
      job type, in group ``<job>-<date the run began>`` (a day's runs of a job side by
      side), with a W&B id stable per (job, run_id, rank) and ``resume="allow"``: a
      requeued or resumed SLURM job continues the same W&B runs.  Works online,
      offline and with ``wandb sync``.  Use it unless you have a reason not to.  A
      sweep's points (`submit`) set ``tracking.wandb.group`` to the sweep's name (also
      a tag) and ``job_type`` to the point, named ``<job>-<point>-rank<R>``: one group
      per sweep, split by point.
    * shared (``tracking.wandb.shared: true``, online only): all ranks write into
      ONE W&B run (id from the run id, name ``<job>-<what differs>``) using W&B's shared mode;
      rank 0 is the primary (it writes config/files and sets the final state).
      Global values are logged once, by rank 0; per-rank values (``loss``,
      ``samples_per_s`` and every key containing ``shard``) become
      ``rank<R>/<key>``.  Use it for many ranks where one run per rank clutters the
      project.  Offline (no server) it falls back to one run per rank, with a warning.

    Every row carries ``step`` as a value and every metric is plotted against it
    (``define_metric("*", step_metric="step")``); ``step=`` is never passed to
    ``log``, because W&B drops rows whose internal ``_step`` goes backwards, which
    is exactly what happens after resuming from an older checkpoint.

Mode (``tracking.wandb.mode``)
    ``auto`` (default): ``$WANDB_MODE`` if set (``WANDB_DISABLED=true`` means
    disabled); else online when credentials exist (``$WANDB_API_KEY``,
    ``$WANDB_IDENTITY_TOKEN_FILE``, or a netrc entry for the ``$WANDB_BASE_URL``
    host, default api.wandb.ai; ``$NETRC`` names the file), else offline.
    ``online`` without any credentials goes offline with a warning: a batch job must
    never sit at a login prompt.  ``offline`` / ``disabled`` as named.  Other
    ``WANDB_*`` variables keep their meaning; ``$WANDB_PROJECT``/``$WANDB_ENTITY``/
    ``$WANDB_DIR`` apply where the job file leaves project/entity/dir unset.
    Offline runs land in ``<dir>/wandb/offline-run-*``; upload them with
    ``wandb sync <run_dir>/wandb/offline-run-*`` (pieces of a resumed run are
    synced in start order into the same run).

Failure policy
    W&B must never stop or stall training.  ``wandb.init`` gets a short timeout
    (``$LSTM_TRAIN_WANDB_INIT_TIMEOUT`` seconds, default 60); if an online init fails
    the tracker tries offline once; after that first failure, and after any error
    from a later W&B call (say the wandb service died), W&B is off for this tracker.
    Each tracker emits at most one `TrackingWarning` about it; the JSONL file is
    complete either way.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import netrc
import os
import re
import socket
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from . import runfiles, runnames
from .about import versions


@contextlib.contextmanager
def redacted_argv() -> Iterator[None]:
    """W&B records the command line (`args` in the run's metadata): an override such as
    `slurm.setup=["export HF_TOKEN=..."]` must not travel with it, so it sees a redacted copy."""
    saved = sys.argv
    sys.argv = [saved[0], *runfiles.redact(list(saved[1:]))]
    try:
        yield
    finally:
        sys.argv = saved

INIT_TIMEOUT_ENV = "LSTM_TRAIN_WANDB_INIT_TIMEOUT"
DEFAULT_INIT_TIMEOUT_S = 60.0
DEFAULT_BASE_URL = "https://api.wandb.ai"
MAX_WANDB_ID = 64

_ACTIVE_RUNS: set[int] = set()  # trackers of this process with a live W&B run


class TrackingWarning(RuntimeWarning):
    """W&B could not be used (at all, or from some point on); local metrics go on."""


@dataclass(frozen=True)
class WorkerInfo:
    """Who is logging: enough to tell workers apart on a dashboard."""

    rank: int
    local_rank: int
    world_size: int
    device: str
    hostname: str = field(default_factory=socket.gethostname)  # asked when a worker starts, not at import


# ---------------------------------------------------------------------------
# Decisions that do not need wandb imported (cheap, and testable on their own)


def has_credentials(base_url: str | None = None) -> bool:
    """Whether W&B would find credentials without asking: env key/token or a netrc entry."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlsplit(base_url or os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL).netloc
    candidates = [Path(os.environ["NETRC"]).expanduser()] if os.environ.get("NETRC") else [
        Path("~/.netrc").expanduser(),
        Path("~/_netrc").expanduser(),
    ]
    for path in candidates:
        try:
            entry = netrc.netrc(path).authenticators(host)
        except (OSError, netrc.NetrcParseError):
            continue
        if entry and entry[2]:
            return True
    return False


def resolve_mode(mode: str) -> str:
    """The W&B mode to use: 'online', 'offline' or 'disabled' (see module doc for the rules)."""
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_DISABLED", "").strip().lower() in ("true", "1", "yes"):
        return "disabled"
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env:
        return {"dryrun": "offline", "run": "online", "shared": "online"}.get(env, env)
    return "online" if has_credentials() else "offline"


def wandb_run_id(job_name: str, run_id: str, rank: int | None) -> str:
    """A W&B run id that is the same on every (re)start of the same rank of the same run.

    Readable when possible (``<job>-<run_id>-r<R>``); characters W&B reserves are
    replaced, and a too-long id is cut and made unique again with a hash.
    """
    raw = f"{job_name}-{run_id}" + ("" if rank is None else f"-r{rank}")
    clean = re.sub(r"[^A-Za-z0-9_.-]", "-", raw)
    if clean == raw and len(clean) <= MAX_WANDB_ID:
        return clean
    digest = hashlib.sha1(raw.encode()).hexdigest()[:10]
    return f"{clean[: MAX_WANDB_ID - 11]}-{digest}"


def default_group(job_name: str, run_dir: Path) -> str:
    """`<job>-<date the run began>`: a day's runs of a job side by side, named for people (a
    resumed run keeps its group: the date is read from the run's `started.json`)."""
    stamp = runfiles.started(run_dir)
    return f"{job_name}-{stamp['date'] if stamp else time.strftime('%Y-%m-%d')}"


def init_timeout() -> float:
    """Seconds `wandb.init` may take before we give up on it (env override for tests)."""
    try:
        return float(os.environ.get(INIT_TIMEOUT_ENV, DEFAULT_INIT_TIMEOUT_S))
    except ValueError:
        return DEFAULT_INIT_TIMEOUT_S


def is_per_rank(key: str) -> bool:
    """Keys whose value differs between ranks (the rest are all-reduced or shared)."""
    return key in ("loss", "samples_per_s", "tokens_per_s") or "shard" in key


def _plain(value: Any) -> Any:
    """Tensors / numpy scalars as Python numbers, so JSON and W&B see the same value."""
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", 0) == 0:
        return item()
    return value


def _json_default(value: Any) -> Any:
    return str(value)


# ---------------------------------------------------------------------------


def open_log(path: Path, buffering: int = -1) -> Any:
    """A metrics log opened to append, never through a symlink (one planted in a shared run
    directory would make training append to the file it points to): refused, naming it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
                     runfiles.FILE_MODE)
    except OSError as e:
        if os.path.islink(path):
            raise runfiles.RunFileError(f"{path}: a symlink; a run's metrics are written only to a plain file there, "
                                        "never through a link (remove the link and run the same command again)") from None
        raise
    return os.fdopen(fd, "a", buffering=buffering, encoding="utf-8")


class Tracker:
    """Per-rank metrics sink.  Never raises out of `log`: tracking must not stop training.

    Call order: ``log`` / ``log_images`` any number of times, then ``finish`` once
    (also on error paths).  Attributes useful to callers and tests: ``mode`` (the
    W&B mode in use now: 'online', 'offline', 'shared' or 'disabled'),
    ``wandb_id``, ``jsonl_path``, ``wandb_dir`` (where wandb writes, None if off).
    """

    def __init__(self, job: Any, run_dir: Path, run_id: str, worker: WorkerInfo,
                 primary: tuple[str, bool] | None = None) -> None:
        self.job, self.run_dir, self.run_id, self.worker = job, Path(run_dir), run_id, worker
        self.primary = primary  # (metric name, higher is better): W&B's summary keeps its best value
        self.jsonl_path = self.run_dir / "metrics" / f"rank-{worker.rank}.jsonl"
        self.jsonl_path.parent.mkdir(parents=True, exist_ok=True)
        self._jsonl: Any = open_log(self.jsonl_path, buffering=1)
        self._local_failed = False
        self._warned = False
        self._run: Any = None
        self._wandb: Any = None
        self._tensorboard: Any = None  # torch's SummaryWriter, made at the first row (`_tensorboard_writer`)
        self._purge_from: int | None = None  # `resumed_at`: the first step an earlier attempt may have logged again
        self.tensorboard_dir: Path | None = (self.run_dir / "tensorboard" / f"rank-{worker.rank}"
                                             if getattr(job.tracking, "tensorboard", False) else None)
        self.shared = False
        self.wandb_id: str | None = None
        self.wandb_dir: Path | None = None
        self.mode = "disabled"
        try:
            self._start_wandb()
        except Exception as e:  # noqa: BLE001 - any W&B problem only turns W&B off
            self._wandb_failed("could not start", e)

    # -- public interface ------------------------------------------------------

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """One row: `step` plus metrics (train: loss, global_loss, lr, samples_per_s, epoch;
        eval: test/loss, test/accuracy, test/shard_loss, test/shard_accuracy, ...)."""
        row = {k: _plain(v) for k, v in metrics.items()}
        now = round(time.time(), 3)
        self._write_local({"step": int(step), "time": now, **row})
        self._tensorboard_log(int(step), now, row)
        self._wandb_log(int(step), row)

    def log_images(self, step: int, images: dict[str, Path]) -> None:
        """Pictures (PNG paths) at a step: listed in the JSONL, uploaded to W&B."""
        now = round(time.time(), 3)
        self._write_local({"step": int(step), "time": now, "images": {k: str(v) for k, v in images.items()}})
        self._tensorboard_images(int(step), now, images)
        if self._run is None:
            return
        try:
            wandb_images = {k: self._wandb.Image(str(v)) for k, v in images.items()}
        except Exception as e:  # noqa: BLE001
            self._wandb_failed("could not read an image for", e)
            return
        self._wandb_log(int(step), wandb_images, own=True)

    def log_table(self, name: str, columns: list[str], rows: list[list[Any]]) -> None:
        """A table of examples (W&B Table); locally, ``metrics/<name>.tsv`` beside the JSONL."""
        try:
            path = self.jsonl_path.with_name(f"{name}.tsv")
            lines = ["\t".join(columns)] + ["\t".join(str(v).replace("\t", " ") for v in row) for row in rows]
            runfiles.write_atomic(path, "\n".join(lines) + "\n")
        except OSError as e:
            self._local_warning(e)
        if self._run is None:
            return
        try:
            self._run.log({name: self._wandb.Table(columns=list(columns), data=[list(r) for r in rows])})
        except Exception as e:  # noqa: BLE001
            self._wandb_failed("could not log a table to", e)

    @property
    def logs_to_wandb(self) -> bool:
        """Whether a W&B run is live here (so a model artifact is worth staging)."""
        return self._run is not None

    def log_model(self, folder: Path, alias: str, metadata: dict[str, Any]) -> None:
        """Every file of `folder` (the staged model artifact: weights, config, run files,
        result.json) as one W&B model artifact with `alias` ("best" for a model selected on
        validation data, else "latest").  The files are not copied to W&B's staging area
        outside the run directory ("immutable": they are not changed after), so an offline
        run directory stays complete: `wandb sync` uploads them from there."""
        if self._run is None:
            return
        try:
            name = re.sub(r"[^A-Za-z0-9_.-]", "-", f"{self.job.name}-{self.run_id}")
            artifact = self._wandb.Artifact(name, type="model", metadata={k: _plain(v) for k, v in metadata.items()})
            for path in sorted(Path(folder).iterdir()):
                artifact.add_file(str(path), name=path.name, policy="immutable")
            self._run.log_artifact(artifact, aliases=[alias])
        except Exception as e:  # noqa: BLE001
            self._wandb_failed("could not log the model artifact to", e)

    def finish(self, summary: dict[str, Any], exit_code: int = 0) -> None:
        """End of the run (or of this attempt): summary to W&B and to
        ``metrics/rank-<R>-summary.json``; closes everything.  Safe to call twice.
        `exit_code` != 0 marks the W&B run as failed (for error paths)."""
        summary = {k: _plain(v) for k, v in summary.items()}
        try:
            path = self.jsonl_path.with_name(f"rank-{self.worker.rank}-summary.json")
            runfiles.write_atomic(path, json.dumps(summary, indent=1, default=_json_default) + "\n")
        except OSError as e:
            self._local_warning(e)
        if self._run is not None:
            try:
                self._run.summary.update(self._wandb_keys(summary, own=True))
                self._run.finish(exit_code=exit_code)
            except Exception as e:  # noqa: BLE001
                self._wandb_failed("could not finish", e)
            self._run = None
            _ACTIVE_RUNS.discard(id(self))
        if not self._jsonl.closed:
            self._jsonl.close()
        if self._tensorboard is not None:
            writer, self._tensorboard = self._tensorboard, None
            try:
                writer.close()
            except Exception as e:  # noqa: BLE001
                self._tensorboard_failed(e)

    # -- W&B -------------------------------------------------------------------

    def _start_wandb(self) -> None:
        """W&B as tracking.wandb asks: online (offline without credentials, or when online fails),
        one run per rank or one shared run; no W&B at all, with a warning, when neither starts."""
        cfg = self.job.tracking.wandb
        mode = resolve_mode(cfg.mode)
        if mode == "disabled":
            return
        if mode == "online" and not has_credentials():
            self._warn("mode is online but no W&B credentials were found (WANDB_API_KEY or netrc); "
                       "logging offline instead, upload later with `wandb sync`")
            mode = "offline"
        self.shared = bool(cfg.shared) and mode == "online"
        if cfg.shared and not self.shared:
            self._warn("tracking.wandb.shared needs W&B online; logging one run per rank instead")

        import wandb  # only now: importing wandb costs a second and is not needed when disabled

        self._wandb = wandb
        root = Path(cfg.dir) if cfg.dir else (Path(os.environ["WANDB_DIR"]) if os.environ.get("WANDB_DIR") else self.run_dir)
        root.mkdir(parents=True, exist_ok=True)
        w = self.worker
        self.wandb_id = wandb_run_id(self.job.name, self.run_id, None if self.shared else w.rank)
        kwargs = self._wandb_init_arguments(root)
        settings: dict[str, Any] = dict(init_timeout=init_timeout(), x_label=f"rank{w.rank}", quiet=w.rank != 0)
        if self.shared:
            settings.update(mode="shared", x_primary=w.rank == 0, x_update_finish_state=w.rank == 0)
        else:
            settings.update(mode=mode)
        errors = self._init_wandb(kwargs, settings, mode)
        if self._run is None:
            self._warn(f"W&B could not start ({'; '.join(errors)}); W&B is off for rank {w.rank}, "
                       f"metrics go on in {self.jsonl_path}")
            return
        if errors:
            self._warn(f"W&B online failed ({errors[0]}); logging offline instead to "
                       f"{root / 'wandb'}, upload later with `wandb sync`")
        self.mode = "shared" if self.shared else ("offline" if errors else mode)
        _ACTIVE_RUNS.add(id(self))
        self.wandb_dir = root / "wandb"
        self._run.define_metric("step")
        self._run.define_metric("*", step_metric="step")
        if self.primary:  # the run summary shows the best validation value, not the last
            name, higher = self.primary
            self._run.define_metric(f"val/{name}", step_metric="step", summary="max" if higher else "min")

    def _wandb_init_arguments(self, root: Path) -> dict[str, Any]:
        """wandb.init's arguments but its settings: the run's id, group, name and config (in shared
        mode each rank's worker facts under its own key, the job from rank 0)."""
        cfg, w = self.job.tracking.wandb, self.worker
        set_fields = cfg.model_fields_set if hasattr(cfg, "model_fields_set") else set()
        worker = {**asdict(w), "run_id": self.run_id, "versions": versions()}
        display = f"{self.job.name}-{cfg.job_type}" if cfg.job_type else runnames.display_name(self.job.name, self.run_id)
        if self.shared:
            config = {f"worker_rank{w.rank}": worker}
            if w.rank == 0:
                config.update(runfiles.shareable(self.job.to_dict()), world_size=w.world_size, run_id=self.run_id)
        else:
            config = {**runfiles.shareable(self.job.to_dict()), **worker}
        kwargs: dict[str, Any] = dict(
            id=self.wandb_id,
            resume="allow",
            group=cfg.group or default_group(self.job.name, self.run_dir),  # a sweep's points: the sweep's name
            name=display + ("" if self.shared else f"-rank{w.rank}"),
            # what differs (a sweep's point: its label), so a dashboard splits the group by it
            job_type=cfg.job_type or runnames.label_of(self.run_id) or "train",
            config=config,
            tags=list(cfg.tags) or None,
            dir=str(root),
            reinit="create_new",  # never finish or reuse some other run living in this process
        )
        if "project" in set_fields or not os.environ.get("WANDB_PROJECT"):
            kwargs["project"] = cfg.project
        if cfg.entity:
            kwargs["entity"] = cfg.entity
        return kwargs

    def _init_wandb(self, kwargs: dict[str, Any], settings: dict[str, Any], mode: str) -> list[str]:
        """wandb.init, and offline where online failed (one run per rank): `self._run` if either
        started, and why each try failed."""
        wandb = self._wandb
        errors: list[str] = []
        try:
            with redacted_argv():
                self._run = wandb.init(**kwargs, settings=wandb.Settings(**settings))
        except Exception as e:  # noqa: BLE001
            errors.append(f"{settings['mode']}: {type(e).__name__}: {str(e).strip()[:300]}")
        if self._run is None and mode == "online" and not self.shared and not _ACTIVE_RUNS:
            # Offline keeps the rows for a later `wandb sync`.  The failed init left the run
            # id claimed in the wandb service, so restart it first (safe: no other run of
            # ours lives in this process; a training process has one tracker).
            try:
                wandb.teardown()
            except Exception:  # noqa: BLE001
                pass
            try:
                with redacted_argv():
                    self._run = wandb.init(**kwargs, settings=wandb.Settings(**{**settings, "mode": "offline"}))
            except Exception as e:  # noqa: BLE001
                errors.append(f"offline: {type(e).__name__}: {str(e).strip()[:300]}")
        return errors

    def _wandb_keys(self, row: dict[str, Any], own: bool = False) -> dict[str, Any]:
        """Row keys as logged to W&B: unchanged in per-rank runs.  In shared mode per-rank
        keys become ``rank<R>/<key>`` and global keys are logged by rank 0 only (they are
        equal on every rank); `own` marks a row that is this rank's alone (images, summary)."""
        if not self.shared:
            return row
        rank = self.worker.rank
        out: dict[str, Any] = {}
        for key, value in row.items():
            if is_per_rank(key) or (own and rank != 0):
                out[f"rank{rank}/{key}"] = value
            elif rank == 0:
                out[key] = value
        return out

    def _wandb_log(self, step: int, row: dict[str, Any], own: bool = False) -> None:
        if self._run is None:
            return
        try:
            self._run.log({"step": step, **self._wandb_keys(row, own)})
        except Exception as e:  # noqa: BLE001
            self._wandb_failed("failed while logging to", e)

    def _wandb_failed(self, what: str, error: BaseException) -> None:
        """Turn W&B off for good after its first error, with one warning."""
        run, self._run = self._run, None
        _ACTIVE_RUNS.discard(id(self))
        self.mode = "disabled"
        self._warn(f"W&B {what} the run ({type(error).__name__}: {str(error).strip()[:300]}); "
                   f"W&B is off for rank {self.worker.rank} from now on, metrics go on in {self.jsonl_path}")
        if run is not None and isinstance(error, (ConnectionError, OSError, EOFError)) and self._wandb:
            # The wandb service is gone: reset wandb's process state so a later run (or its
            # exit hook) does not trip over the dead connection.
            try:
                self._wandb.teardown()
            except Exception:  # noqa: BLE001
                pass

    # -- TensorBoard -------------------------------------------------------------

    def resumed_at(self, step: int) -> None:
        """The run goes on from its checkpoint of `step`: whatever an earlier attempt logged after
        it is repeated now, and TensorBoard is told to drop the earlier copies."""
        self._purge_from = step + 1

    def _tensorboard_writer(self, step: int) -> Any:
        """The SummaryWriter of this rank, made at its first row.  In a folder that already holds
        event files (a resumed run's), it first purges what the earlier attempt logged from the
        step after the checkpoint on (TensorBoard's own restart rule: `purge_step`; without
        `resumed_at`, from this first row's step), as a repeated JSONL step is replaced."""
        if self._tensorboard is None and self.tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            resumed = self.tensorboard_dir.is_dir() and any(self.tensorboard_dir.glob("events.out.tfevents.*"))
            self.tensorboard_dir.mkdir(parents=True, exist_ok=True)
            purge = (self._purge_from if self._purge_from is not None else step) if resumed else None
            self._tensorboard = SummaryWriter(log_dir=str(self.tensorboard_dir), flush_secs=10, purge_step=purge)
        return self._tensorboard

    def _tensorboard_log(self, step: int, wall_time: float, row: dict[str, Any]) -> None:
        if self.tensorboard_dir is None:
            return
        try:
            writer = self._tensorboard_writer(step)
            for key, value in row.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    writer.add_scalar(key, value, global_step=step, walltime=wall_time)
        except Exception as e:  # noqa: BLE001 - TensorBoard must not stop training either
            self._tensorboard_failed(e)

    def _tensorboard_images(self, step: int, wall_time: float, images: dict[str, Path]) -> None:
        if self.tensorboard_dir is None:
            return
        try:
            import numpy as np
            from PIL import Image

            writer = self._tensorboard_writer(step)
            for name, path in images.items():
                with Image.open(path) as picture:
                    pixels = np.asarray(picture.convert("RGB"))
                writer.add_image(name, pixels, global_step=step, walltime=wall_time, dataformats="HWC")
        except Exception as e:  # noqa: BLE001
            self._tensorboard_failed(e)

    def _tensorboard_failed(self, error: BaseException) -> None:
        """TensorBoard off for good after its first error, with one warning (the JSONL goes on)."""
        folder, self.tensorboard_dir = self.tensorboard_dir, None
        writer, self._tensorboard = self._tensorboard, None
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()
        warnings.warn(f"[rank {self.worker.rank}] TensorBoard could not write to {folder} ({type(error).__name__}: "
                      f"{str(error).strip()[:300]}); it is off from now on, metrics go on in {self.jsonl_path}",
                      TrackingWarning, stacklevel=3)

    # -- local -----------------------------------------------------------------

    def _write_local(self, row: dict[str, Any]) -> None:
        """Append one row; line-buffered, so a killed process loses at most a torn last line."""
        line = json.dumps(row, default=_json_default) + "\n"
        try:
            if self._jsonl.closed:  # a log after finish: still recorded
                with open_log(self.jsonl_path) as f:
                    f.write(line)
            else:
                self._jsonl.write(line)
        except (OSError, runfiles.RunFileError) as e:
            self._local_warning(e)

    def _local_warning(self, error: Exception) -> None:
        if not self._local_failed:
            self._local_failed = True
            warnings.warn(f"cannot write metrics to {self.jsonl_path}: {error}", TrackingWarning, stacklevel=3)

    def _warn(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(f"[rank {self.worker.rank}] {message}", TrackingWarning, stacklevel=3)

