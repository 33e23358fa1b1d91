"""Model selection by the user's choice (issue 36, item 3), through the real CLI and loop on
tiny jobs: the tie rule, `train.select.metric`/`mode`, `keep_best` (kept atomically, resumed),
`early_stopping.min_delta`, and the refusals: a metric the task does not report, early stopping
on a job without validation data, a resume under another selection."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from lstm_train import checkpoint
from lstm_train.checkpoint import TOP, checkpoint_files
from lstm_train.selection import TIE_RULE

from .conftest import ROOT, result_of, run_cli
from .test_tagging_run import SMALL as SMALL_TAGGER, UPOS_JOB, make_ud

JOB = str(ROOT / "jobs" / "mnist_lstm.yaml")
SEQUENCE_JOB = "japanese_vowels_lstm"


def write_sequences(path: Path, n: int, seed: int) -> Path:
    """Two classes of short noisy sequences around +0.5 and -0.5 (long format, as `sequence` reads it)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = "up" if i % 2 else "down"
        level = 0.5 if label == "up" else -0.5
        rows += [f"s{i},{level + rng.normal(scale=0.5):.4f},{rng.normal():.4f},{label}" for _ in range(rng.integers(4, 9))]
    path.write_text("id,x,noise,label\n" + "\n".join(rows) + "\n")
    return path


def selected(tmp_path: Path, out: Path, *extra: str) -> list[str]:
    """The issue's case: a small sequence classifier (6 steps an epoch) evaluated on 32 validation
    sequences every 2 steps; its validation accuracy reaches its top value at several evaluations
    while the validation loss goes on moving (measured: 0.9688 at steps 4, 10, 12, 14 and 16, the
    loss lowest at 14)."""
    data = tmp_path / "data"
    if not data.is_dir():
        data.mkdir()
        for name, n, seed in (("train", 96, 0), ("val", 32, 1), ("test", 32, 2)):
            write_sequences(data / f"{name}.csv", n, seed)
    return [SEQUENCE_JOB, "data.dataset=null", *(f"data.{s}={data / s}.csv" for s in ("train", "val", "test")),
            "data.id_column=id", "model.hidden_size=8", "model.bidirectional=false", "optim.lr=0.03",
            "optim.scheduler=none", "train.eval_every_steps=2", f"train.output_dir={out}", *extra]


def evaluations(run_dir: Path) -> list[dict]:
    """Every validation of the run: {"step", "accuracy", "loss"}, in order (the later row of a step
    a resumed run repeated wins, as `report` reads them)."""
    rows = [json.loads(line) for line in (run_dir / "metrics" / "rank-0.jsonl").read_text().splitlines()]
    by_step = {r["step"]: {"step": r["step"], "accuracy": r["val/accuracy"], "loss": r["val/loss"]}
               for r in rows if "val/accuracy" in r}
    return [by_step[s] for s in sorted(by_step)]


def top_steps(run_dir: Path) -> list[int]:
    return sorted(step for step, _ in checkpoint_files(run_dir / "checkpoints" / TOP))


def test_a_tie_goes_to_the_lower_validation_loss(tmp_path: Path) -> None:
    """Selected by validation accuracy (the default), several evaluations reach the same top value:
    the one with the lowest validation loss is kept, not the earliest (the old rule's choice)."""
    out = tmp_path / "run"
    proc = run_cli("run", *selected(tmp_path, out, "train.epochs=5"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result, evals = result_of(out), evaluations(out)
    top = max(e["accuracy"] for e in evals)
    tied = [e for e in evals if e["accuracy"] == top]
    expected = min(tied, key=lambda e: (e["loss"], -e["step"]))
    assert len(tied) >= 2 and expected is not tied[0], evals  # a real tie, which the earliest weights would lose
    assert result["best_step"] == expected["step"] and result["val_loss"] == expected["loss"]
    assert checkpoint.load_best(out / "checkpoints").step == expected["step"]
    assert result["selected_by"] == {"metric": "val_accuracy", "mode": "max", "min_delta": 0.0, "ties": TIE_RULE}
    assert "kept_steps" not in result and not (out / "checkpoints" / TOP).exists()  # keep_best 1: best/ alone


def test_keep_best_keeps_the_k_best_by_the_chosen_metric_and_resumes(tmp_path: Path) -> None:
    """train.select.metric=loss (auto: lower is better), keep_best 3: best/ is the lowest validation
    loss, top/ holds exactly the 3 lowest, each with that step's weights.  Cut back to a checkpoint
    before some of them (as after a crash) and run again: the same 3, the same weights, no debris."""
    out = tmp_path / "run"
    args = selected(tmp_path, out, "train.epochs=5", "train.select.metric=loss", "train.select.keep_best=3",
                    "train.keep_checkpoints=100")
    proc = run_cli("run", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reference, evals = result_of(out), evaluations(out)
    ranked = sorted(evals, key=lambda e: (e["loss"], -e["step"]))[:3]
    assert reference["best_step"] == ranked[0]["step"] and reference["selected_by"]["mode"] == "min"
    assert reference["kept_steps"] == [e["step"] for e in ranked]
    assert top_steps(out) == sorted(e["step"] for e in ranked)
    saved = dict(checkpoint_files(out / "checkpoints"))
    for entry in ranked:
        folder = out / "checkpoints" / TOP / f"step-{entry['step']:08d}"
        meta = checkpoint.read_meta(folder)
        assert meta["value"] == entry["loss"] and meta["selected_by"]["metric"] == "val_loss"
        weights, at_step = checkpoint.read_weights(folder), checkpoint.load(saved[entry["step"]]).model
        assert all(torch.equal(weights[k], at_step[k]) for k in at_step)  # the weights of that evaluation
    assert ranked[0]["step"] != evals[0]["step"]  # the ranking changed during the run: entries were displaced

    cut = sorted(e["step"] for e in ranked)[1] - 1  # one kept entry before the cut, two after it
    (out / "result.json").unlink()
    for step, path in checkpoint_files(out / "checkpoints"):
        if step > cut:
            path.rename(tmp_path / path.name)  # out of the run directory: gone as after a crash
    resumed = run_cli("run", *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    again = result_of(out)
    assert again["resumed_from_step"] <= cut
    assert (again["best_step"], again["kept_steps"], again["val_loss"]) == \
        (reference["best_step"], reference["kept_steps"], reference["val_loss"])
    assert top_steps(out) == sorted(e["step"] for e in ranked)
    assert not [p.name for p in (out / "checkpoints" / TOP).iterdir() if p.name.startswith(".")]  # no temporaries


def test_min_delta_is_patiences_noise_floor(tmp_path: Path) -> None:
    """Selected by loss with patience 2 and a min_delta no improvement reaches: the run stops at its
    third evaluation although the loss fell at each one, and best/ still follows the falling loss."""
    out = tmp_path / "run"
    proc = run_cli("run", *selected(tmp_path, out, "train.epochs=10", "train.select.metric=loss",
                                    "train.early_stopping.patience=2", "train.early_stopping.min_delta=100"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result, evals = result_of(out), evaluations(out)
    assert [e["step"] for e in evals] == [2, 4, 6] and result["stopped_early"] is True and result["steps"] == 6
    assert evals[0]["loss"] > evals[1]["loss"] > evals[2]["loss"]  # without min_delta patience would not run out
    assert result["best_step"] == 6
    assert "val_loss has not improved on" in proc.stdout and "by more than 100" in proc.stdout


def test_selection_that_cannot_apply_is_refused_with_the_reason(tmp_path: Path) -> None:
    """At validation time, before anything is written: early stopping (or keep_best, a metric
    choice, NT-ASGD) on a job without validation data, and a metric the task does not report."""
    out = tmp_path / "never"
    for extra in (["train.early_stopping.patience=3"], ["train.select.keep_best=2"], ["train.select.metric=loss"]):
        proc = run_cli("run", JOB, *extra, f"train.output_dir={out}")
        key = extra[0].split("=")[0]
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert f"{key} = " in proc.stderr and "validation data" in proc.stderr and "data.val_fraction=0.1" in proc.stderr
        assert not out.exists()
    bad = run_cli("config", JOB, "data.val_fraction=0.1", "train.select.metric=acuracy")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "train.select.metric = 'acuracy'" in bad.stderr and "Did you mean 'accuracy'?" in bad.stderr
    assert "Valid: loss (min), accuracy (max)" in bad.stderr
    fine = run_cli("config", JOB, "data.val_fraction=0.1", "train.early_stopping.patience=3", "train.select.metric=loss")
    assert fine.returncode == 0, fine.stderr
    for shipped in ("tag_conll_example", "wikitext2_awd_lstm"):  # the shipped jobs with patience have validation data
        assert run_cli("config", shipped).returncode == 0
    swept = run_cli("config", "sweep_example", "train.early_stopping.patience=2")  # its points get validation data
    assert swept.returncode == 0, swept.stderr


def test_a_metric_the_data_does_not_give_is_refused_when_the_data_is_read(tmp_path: Path) -> None:
    """A tagger's entity scores exist on BIO data only: with data.scheme auto the job validates,
    and a run on UPOS tags is refused once its tags are read, listing the metrics it does report,
    before its run directory is made."""
    data, out = make_ud(tmp_path / "data"), tmp_path / "run"
    proc = run_cli("run", UPOS_JOB, f"data.root={data}", f"train.output_dir={out}", "train.select.metric=entity_f1",
                   *SMALL_TAGGER)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "train.select.metric = 'entity_f1'" in proc.stderr and "on this run's data" in proc.stderr
    assert "accuracy (max)" in proc.stderr and "entity_f1 (" not in proc.stderr
    assert not out.exists()


def test_a_resume_under_another_selection_is_refused(tmp_path: Path) -> None:
    """best/ chosen by validation accuracy cannot go on being compared by loss: a run resumed with
    train.select.metric=loss is refused naming both, and its files are left as they were."""
    out = tmp_path / "run"
    assert run_cli("run", *selected(tmp_path, out, "train.max_steps=4")).returncode == 0
    (out / "result.json").unlink()
    config = (out / "config.yaml").read_bytes()
    proc = run_cli("run", *selected(tmp_path, out, "train.max_steps=6", "train.select.metric=loss"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "chosen by val_accuracy (max)" in proc.stderr and "selects by val_loss (min)" in proc.stderr
    assert (out / "config.yaml").read_bytes() == config
