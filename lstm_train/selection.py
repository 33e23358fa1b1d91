"""Model selection by the user's choice: which validation metric picks the best weights, which
way is better, how ties are broken, when patience runs out, and which k weights are kept.

One rule, in one place, for `checkpoints/best/`, `checkpoints/top/` (train.select.keep_best),
early stopping and NT-ASGD's switch, so that they can never disagree about what "better" means:

* the metric is `train.select.metric` (default: the task's primary metric), read from the
  validation metrics as `val_<metric>`; its direction is `train.select.mode`, or (auto) the one
  the task's data section declares for it (`DataBase.reported_metrics`), the task's own
  `higher_is_better` for its primary metric;
* a better value wins; an exact tie goes to the lower validation loss, and at an equal loss
  (or where the task reports none, or the metric is the loss itself) to the later step.  Before
  this rule the earliest weights kept a tie, which kept a sequence run's step 12 (val accuracy
  1.0) while its val loss fell on from 0.41 to 0.0012;
* a non-finite value never wins;
* patience counts evaluations that do not beat the last *improvement* by more than
  `train.early_stopping.min_delta` (Keras' and Lightning's meaning): the best weights follow
  every win, the patience counter only wins larger than the noise floor.

Checked twice: when the job is validated (`check_job`, torch-free: the metric's name against
the names the data section declares, and no early stopping, metric choice, keep_best or NT-ASGD
on a job without validation data), and when the run's data is known (`Selection.of`: a tagger's
entity scores exist on BIO data only).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any

from .schema import ConfigError

TIE_RULE = "ties: the lower validation loss, then the later step"
SECONDARY = "loss"  # the tie-breaker, lower is better: every built-in task reports a validation loss


@dataclass(frozen=True)
class Selection:
    """The resolved rule of one run: `val_<metric>`, its direction and patience's noise floor."""

    metric: str
    higher_is_better: bool
    min_delta: float = 0.0

    @property
    def key(self) -> str:
        return f"val_{self.metric}"

    @property
    def mode(self) -> str:
        return "max" if self.higher_is_better else "min"

    def describe(self) -> dict[str, Any]:
        """What result.json and best/'s meta.json record: how these weights were chosen."""
        return {"metric": self.key, "mode": self.mode, "min_delta": self.min_delta, "ties": TIE_RULE}

    @classmethod
    def of(cls, job: Any, primary: str, higher_is_better: bool, reported: dict[str, str] | None) -> Selection:
        """The rule of `job` for a task whose primary metric is `primary` (which way: `higher_is_better`)
        and which reports the metrics `reported` on this run's data (None: undeclared).  A ConfigError
        names the key and lists the metrics there are."""
        config = job.train.select
        metric = config.metric or primary
        if reported is not None and metric not in reported:
            raise ConfigError(unknown_metric(metric, reported, "on this run's data"))
        if config.mode != "auto":
            higher = config.mode == "max"
        elif metric == primary:
            higher = higher_is_better
        elif reported is not None:
            higher = reported[metric] == "max"
        else:
            raise ConfigError(f"train.select.metric = {metric!r}: this task does not declare which way its metrics "
                              "are better (its data section has no reported_metrics()); set train.select.mode to "
                              "min or max")
        return cls(metric, higher, job.train.early_stopping.min_delta)

    # -- comparing evaluations ------------------------------------------------------

    def value(self, metrics: dict[str, Any]) -> float:
        """The selected metric of one evaluation's metrics (`val_*`), or a ConfigError listing the
        metrics there are (a task that did not declare its metrics names them only here)."""
        if self.key not in metrics:
            names = {k.removeprefix("val_"): "" for k in metrics if k.startswith("val_")}
            raise ConfigError(unknown_metric(self.metric, names, "in this run's validation metrics"))
        return float(metrics[self.key])

    def rank_key(self, entry: dict[str, Any]) -> tuple[float, float, int]:
        """Sort key of an evaluation (`{"step", "value", "metrics"}`), best first: the value in its
        direction, then the lower validation loss, then the later step."""
        value = float(entry["value"])
        loss = (entry.get("metrics") or {}).get(f"val_{SECONDARY}")
        loss = float(loss) if isinstance(loss, (int, float)) and math.isfinite(loss) else math.inf
        if self.metric == SECONDARY:
            loss = 0.0  # the value is the loss: a tie stays a tie, and the later step wins
        return (-value if self.higher_is_better else value, loss, -int(entry["step"]))

    def better(self, candidate: dict[str, Any], best: dict[str, Any] | None) -> bool:
        """Whether `candidate` takes best/'s place: a finite value that ranks before `best`."""
        if not math.isfinite(float(candidate["value"])):
            return False
        return best is None or self.rank_key(candidate) < self.rank_key(best)

    def improves(self, value: float, reference: float | None) -> bool:
        """Whether `value` resets patience: finite, and beyond the last improvement `reference` by
        more than min_delta (strictly: an equal value is no improvement)."""
        if not math.isfinite(value):
            return False
        if reference is None:
            return True
        margin = value - reference if self.higher_is_better else reference - value
        return margin > self.min_delta

    def top(self, entries: list[dict[str, Any]], keep: int) -> list[dict[str, Any]]:
        """The `keep` best finite entries, best first."""
        finite = [e for e in entries if math.isfinite(float(e["value"]))]
        return sorted(finite, key=self.rank_key)[:keep]


def unknown_metric(metric: str, names: dict[str, str], where: str) -> str:
    close = difflib.get_close_matches(metric, list(names), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    listed = ", ".join(f"{n} ({d})" if d else n for n, d in names.items())
    return f"train.select.metric = {metric!r} is not a metric this task reports {where}.{hint} Valid: {listed}"


# ---------------------------------------------------------------------------
# When the job is validated (torch-free)


def needs_validation(job: Any) -> list[str]:
    """The keys of `job` that act on validation metrics, as `key = value` (empty: none set)."""
    t = job.train
    used = []
    if t.early_stopping.patience is not None:
        used.append(f"train.early_stopping.patience = {t.early_stopping.patience}")
    if t.select.metric is not None:
        used.append(f"train.select.metric = {t.select.metric!r}")
    if t.select.keep_best > 1:
        used.append(f"train.select.keep_best = {t.select.keep_best}")
    if t.ntasgd:
        used.append("train.ntasgd = true")
    return used


def check_job(job: Any, source: str) -> None:
    """Refuse, with the reason, selection settings that cannot apply to `job`: a metric its task
    does not report on this data, or early stopping (a metric choice, keep_best, NT-ASGD) on a job
    without validation data, which would otherwise be ignored without a word.  A job with a sweep
    is checked point by point (the sweep gives its points validation data)."""
    metric = job.train.select.metric
    reported = job.data.reported_metrics()
    if metric is not None and reported is not None and metric not in reported:
        raise ConfigError(f"{source}: {unknown_metric(metric, reported, 'with this data section')}")
    used = needs_validation(job)
    if not used or job.sweep is not None:
        return
    plan = job.data.validation()
    if plan == []:
        return
    how = f"add {' '.join(plan)} (a seeded share of the training data)" if isinstance(plan, list) else plan
    raise ConfigError(f"{source}: {'; '.join(used)}: selection and early stopping compare evaluations on validation "
                      f"data, and this job has none (its test split is evaluated as it trains, and its last weights "
                      f"are the result): {how}, or remove {' and '.join(u.split(' = ')[0] for u in used)}")
