"""`sweep.method: bayes`: model-based search, Optuna's TPE asked and told in batches.

    sweep:
      method: bayes
      count: 12                                        # points in all
      metric: {name: val_mase, goal: minimize}          # a validation metric of result.json
      startup_points: 4                                 # random first (default: count / 3, 2 to 10)
      parameters: {optim.lr: {distribution: log_uniform_values, min: 1.0e-4, max: 1.0e-1}, ...}

Why TPE through Optuna
    W&B's own `bayes` is a Gaussian process run by W&B's sweep server and agents; here no
    server is needed.  Optuna is the maintained library for this (MIT, ask-and-tell, every kind
    of W&B parameter: float, log float, int, categorical), and its Tree-structured Parzen
    Estimator handles those mixed spaces, parallel batches (`constant_liar`: a point still
    training counts as a bad one, so one batch's suggestions spread out) and pruned trials,
    which is how successive halving's stopped points are told back.

How it runs (`lstm_train.slurm.bayes_sweep`)
    `submit` asks for a batch of `slurm.array_parallelism` points (fewer at the end), submits
    them as one job array (or local processes), and with `--wait` waits for them, tells the
    study each point's `sweep.metric` from its result.json and asks for the next batch, until
    `sweep.count` points have run.  Without `--wait` it submits one batch and leaves: `submit`
    again tells what has finished and submits the next.  A point whose job ended without a
    result is submitted again (it resumes from its checkpoint), as for grid and random sweeps.

The study: `<sweep dir>/study.jsonl`
    Optuna's JournalStorage with its file backend: one JSON object per operation (a trial
    asked, its parameters, its value), appended under a lock file that works on NFS
    (`JournalFileOpenLock`), replayed with `json` when the study is opened.  Why this storage:
    a sweep directory is shared and so untrusted, and nothing read from it may run code: the
    journal is parsed as JSON only (Optuna's file backend has no pickled snapshots, unlike its
    Redis one; a pickled in-memory study would run whatever its writer put in it), every
    trial's parameters are checked against the sweep's space before a point is built from them,
    and each point's job is validated as a job file is.  SQLite (RDBStorage) would also work on
    one machine, but its locking is unreliable on the network filesystems sweep directories
    live on; the journal is append-only text, so a killed `submit` loses nothing and
    `optuna-dashboard study.jsonl` or `optuna.load_study` read it as they are.

Seeds
    The sampler of a batch is seeded from `sweep.seed` and the number of points asked before it
    (`batch_seed`), so the same results give the same suggestions whether or not `submit` was
    resumed.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import halving, runfiles
from .sweeps import SweepConfig, point_label

if TYPE_CHECKING:
    import optuna

STUDY_FILE = "study.jsonl"
STUDY_NAME = "sweep"
DIVERGED = "NonFiniteLoss"  # the training loop's error when the loss turns NaN/inf (metrics/rank-0-summary.json)


@dataclass(frozen=True)
class Suggestion:
    """One point the study asked for: its trial number, label (its directory) and parameters."""

    number: int
    label: str
    params: dict[str, Any]
    batch: int


@dataclass(frozen=True)
class Told:
    """What the study was told of a point: state COMPLETE, PRUNED (stopped by halving) or FAIL."""

    label: str
    state: str
    value: float | None
    note: str = ""


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's INFO lines ("Trial 3 finished...") and its ExperimentalWarnings (multivariate
    TPE, constant_liar) stay out of the CLI's output; `submit` and `status` say it themselves."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def search_space(sweep: SweepConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """(dotted key -> Optuna distribution, dotted key -> fixed value): W&B's kinds in Optuna's
    terms (uniform: float; log_uniform_values: log float; int_uniform: int, both ends in;
    values/categorical: categorical; one value: fixed, not searched)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    searched: dict[str, Any] = {}
    fixed: dict[str, Any] = {}
    for key, p in sweep.flat_parameters().items():
        if p.distribution == "uniform":
            searched[key] = FloatDistribution(float(p.min), float(p.max))
        elif p.distribution == "log_uniform_values":
            searched[key] = FloatDistribution(float(p.min), float(p.max), log=True)
        elif p.distribution == "int_uniform":
            searched[key] = IntDistribution(int(p.min), int(p.max))
        elif len(p.discrete) == 1:
            fixed[key] = p.discrete[0]
        else:
            searched[key] = CategoricalDistribution(p.discrete)
    return searched, fixed


def study_path(sweep_dir: Path) -> Path:
    return Path(sweep_dir) / STUDY_FILE


def open_study(sweep_dir: Path, sweep: SweepConfig, create: bool = True) -> optuna.Study:
    """The sweep's study from `<sweep dir>/study.jsonl` (created when `create`), checked to be
    this sweep's: same direction, same metric.  A journal Optuna cannot replay, or one of another
    sweep, is a RunDirError naming the file."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    path = study_path(sweep_dir)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise runfiles.RunDirError(f"{path}: not a plain file (a symlink or folder where the sweep's study journal "
                                   "belongs); move it away")
    if not path.exists() and not create:
        raise FileNotFoundError(f"{path}: no study yet (the sweep has not been submitted)")
    if not path.exists():
        with runfiles.create_private(path) as f:  # never through a link planted there
            os.fchmod(f.fileno(), runfiles.FILE_MODE & ~current_umask())  # as the sweep's other files
    elif path.stat().st_size > runfiles.MAX_RUN_FILE:
        raise runfiles.RunDirError(f"{path}: {path.stat().st_size:,} bytes, far more than a study journal of "
                                   f"{sweep.count} points; move it away to start the search over")
    metric, maximize = sweep.optimised()
    direction = "maximize" if maximize else "minimize"
    with quiet_optuna():
        try:
            storage = JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))
            if STUDY_NAME in [s.study_name for s in storage.get_all_studies()]:
                study = optuna.load_study(study_name=STUDY_NAME, storage=storage)  # reads; appends nothing
            elif create:
                study = optuna.create_study(storage=storage, study_name=STUDY_NAME, direction=direction)
                study.set_user_attr("metric", metric)
            else:
                raise FileNotFoundError(f"{path}: no study in it yet")
        except FileNotFoundError:
            raise
        except Exception as e:  # noqa: BLE001 - whatever a damaged journal makes Optuna raise
            raise runfiles.RunDirError(f"{path}: not a study journal Optuna can replay ({type(e).__name__}: "
                                       f"{runfiles.shorten(str(e))}); move it away to start the search over") from None
    directions = " and ".join(d.name.lower() for d in study.directions)
    if directions != direction or study.user_attrs.get("metric") != metric:
        raise runfiles.RunDirError(
            f"{path}: its study {directions}s {runfiles.shorten(study.user_attrs.get('metric'))}, "
            f"but the sweep's metric is {metric} ({direction}); it belongs to another sweep: move it away")
    return study


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def inside(dist: Any, value: Any) -> bool:
    """Whether `value` lies in Optuna distribution `dist` (a journal's value, checked before use)."""
    from optuna.distributions import CategoricalDistribution

    if isinstance(dist, CategoricalDistribution):
        return any(type(value) is type(c) and value == c for c in dist.choices)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return dist.low <= value <= dist.high


def trial_params(trial: Any, sweep: SweepConfig, searched: dict[str, Any], fixed: dict[str, Any],
                 where: Path) -> dict[str, Any]:
    """A trial's point (dotted key -> value, in the sweep's order), after checking that the
    journal's trial lies in this sweep's space: the journal is a file others can write."""
    params: dict[str, Any] = {}
    for key in sweep.flat_parameters():
        if key in fixed:
            params[key] = fixed[key]
            continue
        dist = trial.distributions.get(key)
        value = trial.params.get(key)
        ok = dist is not None and key in trial.params and dist == searched[key] and inside(dist, value)
        if not ok:
            raise runfiles.RunDirError(f"{where}: trial {trial.number}'s {key} ({runfiles.shorten(value)}) is not in "
                                       "this sweep's space; the journal belongs to another sweep or was edited")
        params[key] = value
    extra = set(trial.params) - set(searched)
    if extra:
        raise runfiles.RunDirError(f"{where}: trial {trial.number} has parameters this sweep does not search: "
                                   f"{', '.join(sorted(map(str, extra)))[:200]}")
    return params


def suggestion(trial: Any, sweep: SweepConfig, searched: dict[str, Any], fixed: dict[str, Any], where: Path) -> Suggestion:
    params = trial_params(trial, sweep, searched, fixed, where)
    batch = trial.user_attrs.get("batch", 0)
    return Suggestion(trial.number, point_label(trial.number, params), params, batch if isinstance(batch, int) else 0)


def open_points(study: optuna.Study, sweep: SweepConfig, sweep_dir: Path) -> list[Suggestion]:
    """The points asked for and not told yet (training, queued, or to be submitted again)."""
    from optuna.trial import TrialState

    searched, fixed = search_space(sweep)
    return [suggestion(t, sweep, searched, fixed, study_path(sweep_dir))
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]


def ask(study: optuna.Study, sweep: SweepConfig, n: int, batch: int) -> list[Suggestion]:
    """`n` new points from TPE: random for the first `sweep.startup` told points, then modelled
    on the results (multivariate: a learning rate and a width that go together are found
    together; constant liar: the points of one batch do not pile up on one spot)."""
    from optuna.samplers import TPESampler

    searched, fixed = search_space(sweep)
    out = []
    with quiet_optuna():
        study.sampler = TPESampler(seed=batch_seed(sweep.seed, len(study.trials)), n_startup_trials=sweep.startup,
                                   multivariate=True, constant_liar=True)
        for _ in range(n):
            trial = study.ask(searched)
            trial.set_user_attr("batch", batch)
            params = {key: fixed[key] if key in fixed else trial.params[key] for key in sweep.flat_parameters()}
            out.append(Suggestion(trial.number, point_label(trial.number, params), params, batch))
    return out


def batch_seed(seed: int, asked: int) -> int:
    """The sampler's seed for a batch: `sweep.seed` and the number of points asked before, mixed
    (numpy's SeedSequence), so that the same history gives the same suggestions, and sweeps of
    neighbouring seeds share no batch's stream (seed + asked would: seed 1's second batch and
    seed 3's first)."""
    import numpy as np

    return int(np.random.SeedSequence([seed % 2**64, asked]).generate_state(1)[0])


def tell(study: optuna.Study, sweep: SweepConfig, sweep_dir: Path, point: Suggestion) -> Told | None:
    """Tell the study how `point` did, from its directory: its result.json's `sweep.metric`
    (COMPLETE), or PRUNED with its rung values when successive halving stopped it, or FAIL when
    its loss diverged to NaN/inf (no result; TPE learns nothing from it, and it is not retried).
    None when the point has no outcome yet."""
    from optuna.trial import Trial, TrialState

    metric, _ = sweep.optimised()
    run_dir = Path(sweep_dir) / point.label
    result = runfiles.read_json(run_dir / runfiles.RESULT, runfiles.RESULT_FIELDS)
    with quiet_optuna():
        if result is None:
            error = diverged(run_dir)
            if error is None:
                return None
            Trial(study, study.trials[point.number]._trial_id).set_user_attr("failed", error)
            study.tell(point.number, state=TrialState.FAIL)
            return Told(point.label, "FAIL", None, error)
        value = result.get(metric)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            found = ", ".join(sorted(k for k in result if k.startswith("val_"))) or "none"
            raise ValueError(f"{run_dir / runfiles.RESULT}: no {metric} (sweep.metric.name) in it; its validation "
                             f"metrics: {found}. Name one of them in sweep.metric")
        value = float(value)
        if not math.isfinite(value):
            study.tell(point.number, state=TrialState.FAIL)
            return Told(point.label, "FAIL", None, f"{metric} is {value}")
        stopped = runfiles.read_json(run_dir / halving.DECISION)
        if stopped is None:
            study.tell(point.number, value)
            return Told(point.label, "COMPLETE", value)
        # TPE ranks a pruned trial by how far it got and its value there (Optuna's split of pruned
        # trials): the values at its rungs, as the other points recorded theirs.
        trial = Trial(study, study.trials[point.number]._trial_id)  # Optuna has no public handle on a trial
        # asked by another process; its Trial(study, trial_id) is what `study.ask` itself returns
        reached = rung_values(run_dir) or [(int(result.get("steps") or 0), value)]
        for step, rung_value in reached:
            trial.report(rung_value, step)
        study.tell(point.number, state=TrialState.PRUNED)
        return Told(point.label, "PRUNED", reached[-1][1], str(stopped.get("reason", "successive halving"))[:300])


def rung_values(run_dir: Path) -> list[tuple[int, float]]:
    """(step, validation value) the point recorded at each halving rung it reached."""
    rungs = runfiles.read_json(Path(run_dir).parent / halving.RUNGS / f"{Path(run_dir).name}.json") or {}
    out = []
    for entry in rungs.values():
        if isinstance(entry, dict) and isinstance(entry.get("step"), int) and isinstance(entry.get("value"), (int, float)) \
                and math.isfinite(entry["value"]):
            out.append((int(entry["step"]), float(entry["value"])))
    return sorted(out)


def diverged(run_dir: Path) -> str | None:
    """The training loop's NaN/inf error of a point that ended without a result, if that is
    why (rank 0's summary says so): retrying the same point would diverge again."""
    try:
        summary = runfiles.read_json(Path(run_dir) / "metrics" / "rank-0-summary.json") or {}
    except runfiles.RunDirError:
        return None
    error = summary.get("error")
    return str(error)[:300] if isinstance(error, str) and error.startswith(DIVERGED) else None


def history(study: optuna.Study, sweep: SweepConfig, sweep_dir: Path) -> list[dict[str, Any]]:
    """Every point in the order it was suggested: number, batch, label, state, value, params,
    and whether TPE chose it (after the startup points) or drew it at random."""
    searched, fixed = search_space(sweep)
    rows = []
    for t in study.get_trials(deepcopy=False):
        try:
            s = suggestion(t, sweep, searched, fixed, study_path(sweep_dir))
        except runfiles.RunDirError:
            continue
        told = sum(1 for u in study.trials[:t.number] if u.state.name in ("COMPLETE", "PRUNED"))
        rows.append({"number": t.number, "batch": s.batch, "point": s.label, "state": t.state.name,
                     "value": t.value, "params": s.params, "by": "tpe" if told >= sweep.startup else "random",
                     "note": t.user_attrs.get("failed") if isinstance(t.user_attrs.get("failed"), str) else None})
    return rows


def best(study: optuna.Study, sweep: SweepConfig, sweep_dir: Path) -> dict[str, Any] | None:
    """The best completed point (pruned points only count when none completed)."""
    rows = [r for r in history(study, sweep, sweep_dir) if r["value"] is not None]
    done = [r for r in rows if r["state"] == "COMPLETE"] or rows
    if not done:
        return None
    _, maximize = sweep.optimised()
    return (max if maximize else min)(done, key=lambda r: r["value"])


