"""The `sweep:` section: W&B's sweep-configuration format for `grid`, `random` and `bayes`.

    sweep:
      method: random            # or grid, or bayes (model-based: `lstm_train.bayes`)
      count: 6                  # random, bayes: how many points (grid: at most this many); W&B's run_cap too
      seed: 0                   # random: the draw (same seed, same points); bayes: the sampler's seed
      metric: {name: val_accuracy, goal: maximize}   # bayes: what it optimises (a validation metric)
      startup_points: 4         # bayes only: random points before TPE models the results (lstm_train's key)
      early_terminate: {type: hyperband, min_iter: 200, eta: 2}   # optional: successive halving
      parameters:
        optim.lr: {distribution: log_uniform_values, min: 1.0e-4, max: 1.0e-2}
        model.hidden_size: {values: [32, 64, 128]}
        model.num_layers: {distribution: int_uniform, min: 1, max: 3}
        train.seed: {value: 3}
        model: {parameters: {dropout: {distribution: uniform, min: 0.0, max: 0.5}}}   # nested form

A parameter is one of W&B's kinds: `value` (constant), `values` (grid: every one; random:
one at random, `probabilities` optional), or a `distribution` of `uniform`,
`log_uniform_values`, `int_uniform` (min and max inclusive) or `categorical` (its `values`);
min/max without a distribution mean int_uniform for two ints, else uniform (W&B's rule).
Keys are dotted job keys (or nested with `parameters:`, as W&B writes them); each point is a
set of overrides of the job, validated like the command line's.  The older `grid: {key:
[values]}` is the same as `method: grid` with `values`.  Points are drawn here, on the login
node, with numpy's seeded generator, so the whole sweep is one job array of known points
(no W&B agent or server needed; `wandb sync` of offline points works the same).
`early_terminate` stops the worst points at rungs of min_iter * eta^k training steps
(`lstm_train.halving`; the value at a rung is the first evaluation at or after it, so make
min_iter a multiple of the evaluation interval).

`method: bayes` has no points known in advance: Optuna's TPE suggests them in batches as
results come back (`lstm_train.bayes`); its parameters are the same kinds except
`probabilities` (TPE has no prior weights), and categorical values must be plain scalars.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from .schema import Section

DISTRIBUTIONS = ("uniform", "log_uniform_values", "int_uniform", "categorical")


class SweepParameter(Section):
    value: Any = None
    values: list[Any] | None = None
    probabilities: list[float] | None = None
    distribution: Literal["uniform", "log_uniform_values", "int_uniform", "categorical"] | None = None
    min: int | float | None = None  # int kept as int: two ints mean int_uniform
    max: int | float | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> SweepParameter:
        given = self.model_fields_set
        dist = self.distribution
        if dist is None:
            if "min" in given or "max" in given:
                both_int = isinstance(self.min, int) and isinstance(self.max, int)
                dist = "int_uniform" if both_int else "uniform"
                object.__setattr__(self, "distribution", dist)  # W&B's rule; no re-validation
            elif self.values is not None:
                dist = "categorical"
            elif "value" not in given:
                raise ValueError("give value, values, or a distribution with min and max")
        if dist in ("uniform", "log_uniform_values", "int_uniform"):
            if self.min is None or self.max is None:
                raise ValueError(f"distribution {dist} needs min and max")
            if self.min > self.max:
                raise ValueError(f"min {self.min} is above max {self.max}")
            if dist == "log_uniform_values" and self.min <= 0:
                raise ValueError(f"log_uniform_values needs min > 0 (got {self.min})")
            if dist == "int_uniform" and not (_is_int(self.min) and _is_int(self.max)):
                raise ValueError(f"int_uniform needs whole-number min and max (got {self.min}, {self.max})")
        if dist == "categorical" and not self.values:
            raise ValueError("categorical needs a non-empty values list")
        if self.probabilities is not None:
            if self.values is None or len(self.probabilities) != len(self.values):
                raise ValueError("probabilities needs one number per entry of values")
            if any(p < 0 for p in self.probabilities) or not math.isclose(sum(self.probabilities), 1.0, abs_tol=1e-6):
                raise ValueError(f"probabilities must be >= 0 and add up to 1 (they add up to {sum(self.probabilities)})")
        return self

    @property
    def discrete(self) -> list[Any] | None:
        """The values a grid walks through (None: a continuous distribution)."""
        if self.distribution in (None, "categorical"):
            return list(self.values) if self.values is not None else [self.value]
        return None


class EarlyTerminate(Section):
    """W&B's `early_terminate`, as successive halving of the points (`lstm_train.halving`)."""

    type: Literal["hyperband"] = Field("hyperband", description="W&B's name for the method; hyperband's rungs run "
                                       "as successive halving here")
    min_iter: int = Field(..., ge=1, description="the first rung, in training steps (then min_iter * eta^k)")
    eta: int = Field(2, ge=2, description="keep the best 1/eta of the points at each rung (2: stop the worse half)")


class HalvingConfig(Section):
    """`train.halving`: set by `submit` on the points of a sweep with `early_terminate`."""

    min_steps: int = Field(..., ge=1, description="the first rung, in training steps (sweep.early_terminate.min_iter)")
    eta: int = Field(2, ge=2, description="a point goes on past a rung when among the best 1/eta there")


class SweepConfig(Section):
    method: Literal["grid", "random", "bayes"] = Field(
        "grid", description=(
            "grid: every combination; random: count draws; bayes: count points suggested by Optuna's TPE from the"
            " results so far"))
    parameters: dict[str, Any] = Field({}, description="W&B's parameters: dotted job key -> value/values/distribution")
    count: int | None = Field(None, ge=1, description="random, bayes: number of points (required); grid: at most "
                              "this many")
    run_cap: int | None = Field(None, ge=1, description="W&B's name for count (a sweep file written for W&B)")
    seed: int = Field(0, description="random: the draw; bayes: the sampler's seed")
    metric: dict[str, Any] | None = Field(None, description="W&B's metric: {name, goal: minimize|maximize}; bayes "
                                          "optimises it (a val_ metric of result.json), grid and random record it "
                                          "(status ranks by the task's primary metric)")
    startup_points: int | None = Field(None, ge=1, description="bayes: points drawn at random before TPE models the "
                                       "results (default: a third of count, 2 to 10); lstm_train's key, not W&B's")
    name: str | None = Field(None, description="the sweep's name (W&B's key; shown by status)")
    description: str | None = Field(None, description="free text kept with the sweep (W&B's key)")
    early_terminate: EarlyTerminate | None = Field(None, description="successive halving: stop the worst points at "
                                                   "rungs of min_iter * eta^k steps (lstm_train.halving)")
    grid: dict[str, list[Any]] = Field({}, description="the older form: dotted key -> list of values (method grid)")

    @model_validator(mode="after")
    def _check(self) -> SweepConfig:
        if self.run_cap is not None:
            if self.count is not None and self.count != self.run_cap:
                raise ValueError(f"sweep.count ({self.count}) and sweep.run_cap ({self.run_cap}) differ: give one")
            object.__setattr__(self, "count", self.run_cap)
        if self.grid and self.parameters:
            raise ValueError("sweep.grid (the older form) or sweep.parameters, not both")
        if self.grid and self.method != "grid":
            raise ValueError("sweep.grid is a grid; for method random write sweep.parameters")
        empty = [k for k, v in self.grid.items() if not v]
        if empty:
            raise ValueError(f"sweep.grid: no values for {', '.join(empty)}")
        params = self.flat_parameters()  # checks every parameter
        if not self.grid and not params:
            raise ValueError("a sweep needs sweep.parameters (or sweep.grid)")
        if self.method == "random" and self.count is None:
            raise ValueError("method random needs sweep.count (the number of points: one job array of that size)")
        if self.method == "bayes":
            _check_bayes(self, params)
        elif self.startup_points is not None:
            raise ValueError(f"sweep.startup_points applies to method bayes only (this sweep is {self.method})")
        if self.method == "grid":
            continuous = [k for k, p in params.items() if p.discrete is None]
            if continuous:
                raise ValueError(f"method grid needs values for every parameter; continuous: {', '.join(continuous)} "
                                 "(use method random, or values)")
        _check_size(self, params)
        if self.metric is not None:
            if set(self.metric) - {"name", "goal", "target"} or "name" not in self.metric:
                raise ValueError(f"sweep.metric is {{name: ..., goal: minimize|maximize}}, not {self.metric}")
            if self.metric.get("goal", "minimize") not in ("minimize", "maximize"):
                raise ValueError(f"sweep.metric.goal = {self.metric['goal']!r}: minimize or maximize")
        return self

    def optimised(self) -> tuple[str, bool]:
        """(result.json key, maximize) of what a bayes sweep optimises: `sweep.metric`, written
        `val_accuracy` or as W&B logs it, `val/accuracy`."""
        assert self.metric is not None  # _check_bayes
        return str(self.metric["name"]).replace("/", "_", 1), self.metric.get("goal") == "maximize"

    @property
    def startup(self) -> int:
        """bayes: how many points TPE draws at random first (Optuna's n_startup_trials, default 10,
        is most of a small sweep: a third of count, at least 2 and at most 10, unless given)."""
        if self.startup_points is not None:
            return self.startup_points
        return max(2, min(10, (self.count or 0) // 3))

    def flat_parameters(self) -> dict[str, SweepParameter]:
        """Dotted key -> parameter, W&B's nested `parameters:` flattened."""
        if self.grid:
            return {k: SweepParameter(values=list(v)) for k, v in self.grid.items()}
        return _flatten(self.parameters, "")


def _check_bayes(sweep: SweepConfig, params: dict[str, SweepParameter]) -> None:
    """What TPE can search, and a metric it can optimise without looking at the test split."""
    if sweep.count is None:
        raise ValueError("method bayes needs sweep.count (how many points to suggest in all)")
    metric = sweep.metric or {}
    name = str(metric.get("name", ""))
    if not name:
        raise ValueError("method bayes needs sweep.metric: {name: val_<metric>, goal: minimize|maximize}, the "
                         "validation metric it optimises (say val_accuracy or val_loss, as result.json names it)")
    if not re.fullmatch(r"val[_/][A-Za-z0-9_]+", name):
        hint = re.sub(r"^(test|val)?[_/]?", "val_", name)
        raise ValueError(f"sweep.metric.name = {name!r}: method bayes optimises a validation metric of result.json "
                         f"(val_...; the test split is never chosen on): say {hint!r}")
    if "goal" not in metric:
        raise ValueError(f"sweep.metric.goal: give minimize or maximize for {name} (a bayes sweep optimises it; "
                         "W&B's default, minimize, is wrong for an accuracy)")
    if all(p.discrete is not None and len(p.discrete) == 1 for p in params.values()):
        raise ValueError("method bayes needs a parameter to search: a distribution, or several values (every "
                         "parameter here is one fixed value)")
    for key, p in params.items():
        if p.probabilities is not None:
            raise ValueError(f"sweep.parameters.{key}: probabilities apply to method random only (TPE has no prior "
                             "weights); drop them, or repeat a value in values")
        for v in p.values or ():
            if v is not None and not isinstance(v, (bool, int, float, str)):
                raise ValueError(f"sweep.parameters.{key}: method bayes takes plain values (numbers, strings, "
                                 f"true/false, null), not {shorten_value(v)}")
    if sweep.startup_points is not None and sweep.startup_points > sweep.count:
        raise ValueError(f"sweep.startup_points ({sweep.startup_points}) is more than sweep.count ({sweep.count})")


def shorten_value(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _flatten(parameters: dict[str, Any], prefix: str) -> dict[str, SweepParameter]:
    out: dict[str, SweepParameter] = {}
    for key, spec in parameters.items():
        name = prefix + str(key)
        if not isinstance(spec, dict):
            raise ValueError(f"sweep.parameters.{name}: a mapping (value, values or distribution), got {spec!r}")
        if set(spec) == {"parameters"}:
            out.update(_flatten(spec["parameters"], name + "."))
            continue
        try:
            out[name] = SweepParameter.model_validate(spec)
        except ValidationError as e:
            reason = "; ".join((f"{'.'.join(map(str, err['loc']))}: " if err["loc"] else "")
                               + err["msg"].removeprefix("Value error, ") for err in e.errors())
            raise ValueError(f"sweep.parameters.{name}: {reason}") from None
    return out


MAX_POINTS = 10_000


def _check_size(sweep: SweepConfig, params: dict[str, SweepParameter]) -> None:
    """Refuse a sweep of more than MAX_POINTS points from its sizes alone, before anything is
    expanded (an 8-million-point grid would be built whole in memory, and no cluster runs it)."""
    if sweep.method == "grid":
        size = math.prod(len(p.discrete or ()) for p in params.values())
        n = min(size, sweep.count) if sweep.count else size
        what = f"its grid has {size} points" + (f" (sweep.count {sweep.count})" if sweep.count else "")
    else:
        n, what = sweep.count or 0, f"sweep.count is {sweep.count}"
    if n > MAX_POINTS:
        raise ValueError(f"a sweep runs at most {MAX_POINTS} points; {what}. Use fewer values, sweep.count "
                         f"<= {MAX_POINTS}, or split it into several sweeps")


def _is_int(x: Any) -> bool:
    return x is not None and float(x).is_integer()


def points(sweep: SweepConfig) -> list[dict[str, Any]]:
    """Every point of the sweep: dotted key -> value, in a fixed order."""
    params = sweep.flat_parameters()
    if sweep.method == "bayes":
        raise ValueError("a bayes sweep has no points known in advance: TPE suggests them as results come back. "
                         "Run it with `lstm-train submit JOB` (--executor local on this machine), or use method "
                         "random to draw points up front")
    if sweep.method == "grid":
        keys = list(params)
        product = itertools.product(*(params[k].discrete for k in keys))  # bounded: _check_size
        return [dict(zip(keys, values)) for values in itertools.islice(product, sweep.count)]
    import numpy as np

    rng = np.random.default_rng(sweep.seed)
    return [{key: _draw(p, rng) for key, p in params.items()} for _ in range(sweep.count)]


def _draw(p: SweepParameter, rng: Any) -> Any:
    if p.distribution == "uniform":
        return float(rng.uniform(p.min, p.max))
    if p.distribution == "log_uniform_values":
        return float(math.exp(rng.uniform(math.log(p.min), math.log(p.max))))
    if p.distribution == "int_uniform":
        return int(rng.integers(int(p.min), int(p.max) + 1))
    values = p.discrete
    index = int(rng.choice(len(values), p=p.probabilities)) if len(values) > 1 else 0
    return values[index]


def point_label(index: int, params: dict[str, Any]) -> str:
    """`00-lr=0.01,hidden_size=64`: the index, then the last part of each key (safe as a file name)."""
    parts = ",".join(f"{k.split('.')[-1]}={f'{v:.4g}' if isinstance(v, float) else v}" for k, v in params.items())
    return f"{index:02d}-" + re.sub(r"[^A-Za-z0-9_.,=+-]", "_", parts)[:80]


def describe(sweep: SweepConfig, n: int) -> str:
    """'random sweep of 6 points over optim.lr, model.hidden_size'."""
    return f"{sweep.method} sweep of {n} point(s) over {', '.join(sweep.flat_parameters())}"


def point_overrides(params: dict[str, Any]) -> list[str]:
    return [f"{k}={json.dumps(v)}" for k, v in params.items()]


__all__ = ["EarlyTerminate", "HalvingConfig", "SweepConfig", "SweepParameter", "describe", "point_label", "point_overrides", "points"]
