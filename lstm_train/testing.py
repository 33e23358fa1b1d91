"""The task contract, checked: what an author runs on a task of his own (`lstm-train check-task
JOB`, or `check_task` from his tests) and what lstm_train's tests run on every built-in task.

`check_task` runs every hook of the task on a tiny job, in the loop's order, and raises a
`ContractError` naming the task, the hook and what it did wrong:

* data: `load_data` (through the prepared-data store, the loop's one data path) gives plain-JSON
  `Splits.info`; a data section whose `validation()` says it gives a validation split ([]) does,
  and the overrides it gives otherwise make a valid job (a sweep compares its points on them);
* state: no hook sets an attribute on the task (`vars(task)` is as `__init__` left it);
* run files: written through the one helper, a second write of the same data accepted;
* training: `step_loss` gives a loss that backpropagates and a detached carry;
* metrics: keys `test_*`, the primary metric among them, exactly the metrics `reported_metrics`
  declares, the primary one better the way `higher_is_better` says;
* `finish`: result.json-able, image paths as strings;
* `predict`: lines of text; a blank input refused as a `PredictInputError` naming it; and a fresh
  process given only the info (as JSON) and the weights (safetensors) predicts the same lines,
  printing nothing else on stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_model

from .config import apply_override, validate_job
from .data.store import prepared
from .tasks import get_task
from .tasks.base import PredictInputError, Task


class ContractError(AssertionError):
    """A task that breaks the contract (an AssertionError, so a test runner shows it as a failure)."""


@dataclass
class Case:
    """A task's tiny job for the contract check, and how to try its `predict`."""

    job: Any  # a validated job; its train.output_dir is the check's run directory (must not exist yet)
    inputs: list[str]  # predict's positional inputs
    options: dict[str, Any]  # predict's options, by dest (`--text` -> "text")
    blank: tuple[list[str], dict[str, Any]] | None = None  # a blank predict input the task must refuse
    train_indices: Any = None  # one training batch (default: samples 0-3; a stream task: a window per stream)
    path: list[str] = field(default_factory=list)  # where an outside task's package is imported from
    data_dir: Path | None = None  # the check's own copy of the job's input files: emptied before the fresh
    # process predicts (info and weights must be all it needs); None: nothing is deleted


FRESH = """
import json, sys
from pathlib import Path
from safetensors.torch import load_model
from lstm_train.config import validate_job
from lstm_train.tasks import get_task
folder = Path(sys.argv[1])
saved = json.loads((folder / "saved.json").read_text())
job = validate_job(saved["job"], "saved job")
task = get_task(job.task)(job, Path(saved["run_dir"]))
model = task.build_model(saved["info"])
load_model(model, folder / "model.safetensors")
print(json.dumps(task.predict(model.eval(), saved["info"], saved["inputs"], saved["options"])))
"""


def require(ok: bool, message: str) -> None:
    if not ok:
        raise ContractError(message)


def _snapshot(task: Task) -> dict[str, int]:
    return {k: id(v) for k, v in vars(task).items()}


def check_task(case: Case, workdir: Path) -> list[str]:
    """Every hook of the task on its tiny job, in the loop's order (see the module docstring);
    `workdir`: a folder of the check's own (the fresh process's files go there).  Returns what
    was checked, a line each; raises ContractError on the first breach."""
    job = case.job
    run_dir = Path(job.train.output_dir)
    task = get_task(job.task)(job, run_dir)
    name, before = task.name, _snapshot(task)

    def unchanged(hook: str) -> None:
        added = sorted(set(vars(task)) - set(before)) or "attributes"
        require(_snapshot(task) == before, f"{name}: {hook} set {added} on the task (keep state in Splits.info)")

    splits, info = _data(task, case)
    unchanged("load_data")
    run_dir.mkdir(parents=True)
    task.write_run_files(run_dir, info)
    task.write_run_files(run_dir, info)  # a resumed run over the same data: accepted
    unchanged("write_run_files")
    model = _train_step(task, splits, info, case)
    unchanged("build_model/init_weights/step_loss")
    _metrics(task, model, splits, info)
    unchanged("eval_sums/metrics")
    extra = task.finish(model, splits, run_dir)
    try:
        json.dumps(extra)
    except TypeError as e:
        raise ContractError(f"{name}: finish returned what result.json cannot hold ({e}); give paths as strings") from None
    require(all(isinstance(p, str) for p in extra.get("images", {}).values()), f"{name}: finish's image paths")
    unchanged("finish")
    expected = task.predict(model, info, case.inputs, case.options)
    require(bool(expected) and all(isinstance(line, str) for line in expected), f"{name}: predict gave {expected!r}, "
            "not lines of text")
    unchanged("predict")
    if case.blank is not None:  # refused the same way by every task that reads inputs
        try:
            task.predict(model, info, *case.blank)
        except PredictInputError as e:
            require("number 1 is empty" in str(e), f"{name}: a blank input refused as {e!r}, not naming it "
                    "(use predict_texts or predict_files)")
        else:
            raise ContractError(f"{name}: predict accepted a blank input {case.blank!r}")
    _fresh_process(name, case, model, info, run_dir, expected, workdir)
    return [f"{name}: {line}" for line in (
        "load_data through the prepared-data store; Splits.info is plain JSON", f"validation: {job.data.validation()}",
        "no hook sets state on the task", "run files written and accepted again", "step_loss backpropagates",
        "metrics: test_* keys, the primary metric, the declared ones", "finish: result.json-able",
        f"predict: {len(expected)} line(s)" + (", a blank input refused" if case.blank else ""),
        "a fresh process predicts the same lines from info and weights alone")]


def _data(task: Task, case: Case) -> tuple[Any, dict[str, Any]]:
    """The splits through the store, and the validation split the data section promises."""
    name, job = task.name, case.job
    splits = prepared.load(task)  # the one data path: the store runs the task's stream
    info = json.loads(json.dumps(splits.info))
    require(info == splits.info, f"{name}: Splits.info is not plain JSON (str, int, float, bool, list, dict)")
    plan = job.data.validation()
    if plan == []:
        require(splits.val is not None and len(splits.val[0]) > 0, f"{name}: the data section's validation() says "
                "the job has a validation split, but load_data gave none (Splits.val)")
    elif isinstance(plan, list):  # the overrides a sweep adds: a valid job
        spec = job.to_dict()
        for override in plan:
            apply_override(spec, override, f"{name}: validation()")
        validate_job(spec, f"{name}: the job with validation()'s overrides {plan}")
    return splits, info


def _train_step(task: Task, splits: Any, info: dict[str, Any], case: Case) -> torch.nn.Module:
    torch.manual_seed(0)
    model = task.build_model(info)
    task.init_weights(model, info)
    indices = torch.arange(4) if case.train_indices is None else case.train_indices
    loss, carry = task.step_loss(model, task.batch(splits.train, indices), {}, info)
    require(loss.dim() == 0 and loss.requires_grad, f"{task.name}: step_loss gave {tuple(loss.shape)} "
            f"(requires_grad {loss.requires_grad}), not a scalar loss to backpropagate")
    loss.backward()
    require(all(not v.requires_grad for v in carry.values()), f"{task.name}: step_loss's carry is not detached")
    return model


def _metrics(task: Task, model: torch.nn.Module, splits: Any, info: dict[str, Any]) -> None:
    name = task.name
    model.eval()
    with torch.no_grad():
        scored = splits.test if splits.test is not None else splits.val  # a corpus cut in two: val only
        sums = task.eval_sums(model, task.batch(scored, torch.arange(4)), info)
    metrics = task.metrics({k: float(v) for k, v in sums.items()}, info, prefix="test_")
    require(f"test_{task.primary(info)}" in metrics, f"{name}: metrics lack test_{task.primary(info)}, the primary "
            f"metric (got {sorted(metrics)})")
    require(all(k.startswith("test_") for k in metrics), f"{name}: metric keys {sorted(metrics)} (all test_*)")
    reported = task.reported_metrics(info)  # what train.select.metric may name, and which way each is better
    if reported is not None:  # exactly the metrics it reports (counts aside), the primary one its own way
        produced = {k.removeprefix("test_") for k, v in metrics.items() if not isinstance(v, int)}
        require(produced == set(reported), f"{name}: reports {sorted(produced)}, declares {sorted(reported)} "
                "(reported_metrics)")
        require(reported[task.primary(info)] == ("max" if task.higher_is_better else "min"),
                f"{name}: reported_metrics says {task.primary(info)} is better {reported[task.primary(info)]}, "
                f"higher_is_better says {task.higher_is_better}")


def _fresh_process(name: str, case: Case, model: torch.nn.Module, info: dict[str, Any], run_dir: Path, expected: list[str],
                   workdir: Path) -> None:
    """Info as JSON and the weights as safetensors: a fresh process (the data gone) predicts the
    same lines, and prints nothing else on stdout."""
    folder = workdir / "saved"
    folder.mkdir(parents=True)
    save_model(model, str(folder / "model.safetensors"))
    (folder / "saved.json").write_text(json.dumps({"job": case.job.to_dict(), "run_dir": str(run_dir), "info": info,
                                                   "inputs": case.inputs, "options": case.options}))
    for path in (case.data_dir.rglob("*") if case.data_dir else ()):  # info, weights and run files only
        if path.is_file():
            path.unlink()
    own = str(Path(__file__).resolve().parents[1])  # this lstm_train, wherever it is installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*case.path, own, os.environ.get("PYTHONPATH", "")])}
    fresh = subprocess.run([sys.executable, "-c", FRESH, str(folder)], capture_output=True, text=True,
                           timeout=300, cwd=folder, env=env)
    require(fresh.returncode == 0, f"{name}: a fresh process could not predict from info and weights "
            f"alone:\n{fresh.stderr[-3000:]}")
    try:
        lines = json.loads(fresh.stdout)
    except json.JSONDecodeError:
        raise ContractError(f"{name}: predict printed on stdout ({fresh.stdout[:300]!r}); messages go to "
                            "stderr (note())") from None
    require(lines == expected, f"{name}: a fresh process predicts {lines[:3]}..., the trained one "
            f"{expected[:3]}...: predict depends on something besides info and weights")
