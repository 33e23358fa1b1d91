"""`train.init_from: RUN_DIR` (issue 36, item 4), through the real CLI and loop on the fake MNIST:
a warm start continues a finished run's accuracy from its level; a model, class list or task that
does not fit is refused, explained, before anything is written; the source is read as safetensors
and JSON only (a pickle planted in it never runs); a resumed run never reads it again."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

from lstm_train.checkpoint import checkpoint_files

from .conftest import ROOT, accelerate_cli, make_fake_mnist, result_of, run_cli

JOB = str(ROOT / "jobs" / "mnist_lstm.yaml")
FASHION = str(ROOT / "jobs" / "fashion_mnist_lstm.yaml")


def first_test(run_dir: Path) -> tuple[float, float]:
    """(loss, accuracy) of the run's first evaluation (MNIST has no validation split: the test split's)."""
    rows = [json.loads(line) for line in (run_dir / "metrics" / "rank-0.jsonl").read_text().splitlines()]
    return next((r["test/loss"], r["test/accuracy"]) for r in rows if "test/accuracy" in r)


class Planted:
    """Unpickling this writes a file: the proof that something read a pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_a_warm_start_continues_from_the_sources_level(fake_mnist: Path, tmp_path: Path) -> None:
    source, warm, cold = tmp_path / "source", tmp_path / "warm", tmp_path / "cold"
    common = [JOB, f"data.root={fake_mnist}", "train.mixed_precision=no"]
    assert run_cli("run", *common, "train.epochs=6", f"train.output_dir={source}").returncode == 0
    level = result_of(source)
    assert level["test_accuracy"] > 0.9  # a source worth starting from (measured: 0.99, test loss 0.58)
    marker = tmp_path / "pickle-ran"
    (_, newest), *_ = checkpoint_files(source / "checkpoints")
    (newest / "state.pt").write_bytes(pickle.dumps(Planted(marker)))  # the source is untrusted

    tune = ["train.max_steps=4", "train.eval_every_steps=2", "optim.lr=0.001"]  # a fine-tuning rate
    proc = run_cli("run", *common, *tune, f"train.init_from={source}", f"train.output_dir={warm}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not marker.exists()  # weights from model.safetensors and meta.json; nothing unpickled
    result = result_of(warm)
    assert result["init_from"]["init_from"] == str(source) and result["init_from"]["init_step"] == level["steps"]
    assert "starting from the weights of" in proc.stdout
    assert run_cli("run", *common, *tune, f"train.output_dir={cold}").returncode == 0
    (warm_loss, warm_accuracy), (cold_loss, cold_accuracy) = first_test(warm), first_test(cold)
    assert warm_loss < 1.1 * level["test_loss"]  # two steps on, the loss goes on from the source's level
    assert cold_loss > 2 * warm_loss and warm_accuracy > cold_accuracy + 0.3  # not from where a fresh start is

    # Two processes read the source alike and train one model from it.
    ddp = tmp_path / "ddp"
    proc = accelerate_cli(2, "run", *common, *tune, f"train.init_from={source}", f"train.output_dir={ddp}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    shared = result_of(ddp)
    assert shared["init_from"] == result["init_from"] and len(set(shared["weights_sha1_per_rank"])) == 1

    # Resumed, the run continues its own checkpoint: the source is not read again (here: gone).
    (warm / "result.json").unlink()
    source.rename(tmp_path / "moved")
    again = run_cli("run", *common, "train.max_steps=6", "train.eval_every_steps=2", "optim.lr=0.001",
                    f"train.init_from={source}", f"train.output_dir={warm}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert result_of(warm)["resumed_from_step"] == 4 and result_of(warm)["init_from"] == result["init_from"]


def test_a_source_that_does_not_fit_is_refused_and_explained(fake_mnist: Path, tmp_path: Path) -> None:
    source = tmp_path / "source"
    assert run_cli("run", JOB, f"data.root={fake_mnist}", "train.max_steps=2", f"train.output_dir={source}").returncode == 0
    fashion = make_fake_mnist(tmp_path / "fashion", name="FashionMNIST")
    cases = [
        # another model: each tensor of another shape named
        ([JOB, f"data.root={fake_mnist}", "model.hidden_size=32"], ["lstm.weight_hh_l0: [256, 64] in the source, "
                                                                     "[128, 32] here"]),
        # the same shapes, other classes: Fashion-MNIST's ten are not the ten digits
        ([FASHION, f"data.root={fashion}"], ["classes: 10 entries in the source, 10 here; the first difference is "
                                             "entry 0: '0' in the source, 'T-shirt/top' here"]),
        # another task
        ([str(ROOT / "jobs" / "sine_forecast.yaml"), "data.sine.series=2"],
         ["holds a classify model; this job trains a forecast model"]),
    ]
    for args, said in cases:
        out = tmp_path / "refused"
        proc = run_cli("run", *args, "train.max_steps=2", f"train.init_from={source}", f"train.output_dir={out}")
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert f"train.init_from = {source}" in proc.stderr and all(s in proc.stderr for s in said), proc.stderr
        assert not (out / "config.yaml").exists() and not checkpoint_files(out / "checkpoints")

    for target, said in ((tmp_path / "nowhere", "not a folder"), (tmp_path, "no weights there")):
        proc = run_cli("run", JOB, f"data.root={fake_mnist}", f"train.init_from={target}",
                       f"train.output_dir={tmp_path / 'x'}")
        assert proc.returncode == 2 and said in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
