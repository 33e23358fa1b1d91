"""`lstm-train bench` measures every loop and reports what it measured.

The bench is a benchmark, not a timed test: nothing here asserts a speed, only that each
loop ran the steps it reports, that the floor is measured and the ratios are computed
from the measured times, that any task's job is taken, and that --scaling writes its
table, JSON and PNG.  (That both data paths give the same batches is tests/test_batching.py.)
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lstm_train.bench import lstm_flops_per_sample, reset_accelerate
from lstm_train.distributed import resolve_precision
from lstm_train.tasks.classify import ClassifyTask, as_rows

try:  # `python -m pytest` from the repo root, or tests/ as a package
    from tests.conftest import require, run_cli
except ImportError:  # plain `pytest`: tests/ itself is on sys.path
    from conftest import require, run_cli  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------
# The bench itself


def test_flop_count_matches_the_issue() -> None:
    # 28 steps x 4 gates x 64 x (28 + 64) multiply-adds, x2 FLOPs, x3 with backward: about 4 MFLOP.
    flops = lstm_flops_per_sample(28, 28, 64, 1, False, 10)
    assert flops == 3 * (2 * 28 * 4 * 64 * (28 + 64) + 2 * 64 * 10)
    assert 3.9e6 < flops < 4.0e6
    # Bidirectional doubles the recurrent work; a second layer reads 2H features.
    two = lstm_flops_per_sample(28, 28, 64, 2, True, 10)
    assert two == 3 * (2 * 2 * 28 * 4 * 64 * (28 + 64) + 2 * 2 * 28 * 4 * 64 * (128 + 64) + 2 * 128 * 10)


def check_loop(loop: dict, steps: int, units: int) -> None:
    assert loop["steps"] == steps and loop["units"] == units
    assert loop["epoch_s"] > 0 and loop["per_s"] > 0 and loop["cpu_s"] > 0 and loop["per_cpu_s"] > 0
    assert loop["eval_s"] > 0  # the test evaluation ran, timed apart from training
    assert loop["metric"] is not None
    assert loop["per_s"] == pytest.approx(units / loop["epoch_s"], rel=0.01)


def bench_json(*args: str, data: Path) -> tuple[dict, str]:
    proc = run_cli("bench", "--json", *args, env={"LSTM_TRAIN_DATA": str(data)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout), proc.stderr  # stdout is one JSON object; the loops' chatter goes to stderr


def test_bench_measures_the_floor_the_tutorial_and_lightning(fake_mnist: Path) -> None:
    require(importlib.util.find_spec("lightning") is not None, "lightning not installed (pip install -e '.[bench]')")
    # fake MNIST: 512 training samples, 8 steps of 64 per epoch; 3 steps each
    report, stderr = bench_json("--max-steps", "3", data=fake_mnist)
    assert report["task"] == "classify" and report["unit"] == "samples" and report["metric"] == "test_accuracy"
    for loop in (report["tutorial"], report["lstm_train"], report["floor"], *report["lightning"].values()):
        check_loop(loop, 3, 3 * 64)
        assert 0.0 <= loop["metric"] <= 1.0
    # The floor: the same model and batches, its own clock; eager on a CPU, in the loop's precision.
    # `train.mixed_precision: auto` as the loop resolves it on this machine (bf16 where the CPU runs it natively).
    assert report["floor"]["mode"] == "eager"
    assert report["precision"] == report["floor"]["precision"] == report["lstm_train"]["precision"] == \
        resolve_precision("auto", ClassifyTask.precision, force_cpu=True)
    assert report["floor_ratio"] == pytest.approx(report["lstm_train"]["epoch_s"] / report["floor"]["epoch_s"], rel=0.01)
    assert report["floor_ratio_cpu"] == pytest.approx(report["lstm_train"]["cpu_s"] / report["floor"]["cpu_s"], rel=0.01)
    # Same work on every side, so throughput ratios are epoch-time ratios.
    assert report["speedup"] == pytest.approx(report["tutorial"]["epoch_s"] / report["lstm_train"]["epoch_s"], rel=0.01)
    # Lightning's bf16-mixed runs where this CPU has native bf16; elsewhere oneDNN refuses it and the
    # bench reports the peer as failed instead of stopping
    assert "fp32" in report["lightning"] and set(report["lightning"]) <= {"fp32", "bf16"}
    assert report["lightning"]["fp32"]["precision"] == "32-true"
    if "bf16" in report["lightning"]:
        assert report["lightning"]["bf16"]["precision"] == "bf16-mixed"
    fastest = max(report["lightning"], key=lambda k: report["lightning"][k]["per_s"])
    assert report["lightning_fastest"] == fastest
    assert report["vs_lightning"] == pytest.approx(
        report["lstm_train"]["per_s"] / report["lightning"][fastest]["per_s"], rel=0.01)
    assert report["metric_delta"] == pytest.approx(report["lstm_train"]["metric"] - report["tutorial"]["metric"], abs=1e-4)
    assert report["threads"] == 1 and report["device"].startswith("cpu") and report["torch"] == torch.__version__
    assert report["same_settings"] is True and report["flops_per_sample"] == lstm_flops_per_sample(28, 28, 64, 1, False, 10)
    assert report["lstm_train"]["gflops"] > 0 and report["floor"]["gflops"] > 0
    assert "Epoch [1/1], Step [1/" in stderr  # the tutorial's own log lines


@pytest.mark.usefixtures("one_thread")
def test_lstm_train_cpu_seconds_leave_its_evaluation_out(fake_mnist: Path) -> None:
    # The loop's wall clock leaves the in-loop evaluation out (eval_seconds); its CPU clock must too,
    # or lstm_train's CPU seconds carry the test pass that the floor's never do.
    from lstm_train.bench.ours import lstm_train_epoch
    from lstm_train.config import load_job

    job = load_job(ROOT / "jobs" / "mnist_lstm.yaml", [f"data.root={fake_mnist}", "train.cpu=true"])
    timing, result = lstm_train_epoch(job, max_steps=3)
    assert result["steps"] == 3 and result["eval_seconds"] > 0
    assert 0 <= result["eval_cpu_seconds"] <= result["train_cpu_seconds"]
    assert timing["cpu_s"] == pytest.approx(result["train_cpu_seconds"] - result["eval_cpu_seconds"])
    assert timing["epoch_s"] == pytest.approx(result["train_seconds"] - result["eval_seconds"])


def test_bench_one_and_two_processes(fake_mnist: Path) -> None:
    report, _ = bench_json("--max-steps", "3", "--processes", "--skip-tutorial", "--skip-lightning", data=fake_mnist)
    assert report["tutorial"] is None and report["tutorial_status"].startswith("skipped")
    assert report["lightning"] is None and report["lightning_status"].startswith("skipped")
    procs = report["processes"]
    assert procs["1"]["world_size"] == 1 and procs["2"]["world_size"] == 2
    check_loop(procs["1"], 3, 3 * 64)
    check_loop(procs["2"], 3, 3 * 64 * 2)  # 64 per process per step
    assert procs["scaling"] == pytest.approx(procs["2"]["per_s"] / procs["1"]["per_s"], rel=0.01)


def test_bench_table_with_a_job_file_and_overrides(fake_mnist: Path, tmp_path: Path) -> None:
    job = tmp_path / "wide.yaml"
    job.write_text(f"task: classify\ndata:\n  root: {fake_mnist}\nmodel:\n  hidden_size: 32\n")
    proc = run_cli("bench", str(job), "model.bidirectional=true", "train.mixed_precision=bf16", "--max-steps", "3",
                   "--repeats", "2", "--skip-lightning")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    runs = resolve_precision("bf16", force_cpu=True)  # bf16 where this CPU has it natively, else fp32 (said)
    assert "tutorial (torchvision + DataLoader)" in out and f"lstm_train ({runs})" in out and f"floor (eager, {runs})" in out
    assert "framework overhead: lstm_train's epoch takes" in out
    assert "settings differ from the tutorial" in out  # hidden 32, bidirectional: not the tutorial's model
    assert "skipped (--skip-lightning)" in out
    assert "2 repeat(s)" in out and "1 thread(s)" in out and f"precision {runs}" in out


def test_bench_overrides_without_a_job_file_change_the_default_job(fake_mnist: Path) -> None:
    """`lstm-train bench train.mixed_precision=no` (the README's exact-fp32 line): overrides of the
    tutorial's job, not a job file to look up."""
    report, _ = bench_json("train.mixed_precision=no", "--max-steps", "2", "--skip-tutorial", "--skip-lightning",
                           data=fake_mnist)
    assert report["job"] == "mnist_lstm" and report["precision"] == "no" and report["floor"]["precision"] == "no"
    check_loop(report["lstm_train"], 2, 2 * 64)


def test_bench_takes_a_forecast_job(tmp_path: Path) -> None:
    """Any task's job: the floor and lstm_train's loop, no tutorial (it is MNIST classification)."""
    root = Path(__file__).resolve().parents[1]
    report, _ = bench_json(
        str(root / "jobs" / "sine_forecast.yaml"), "data.sine.series=4", "data.sine.length=200", "data.window=10",
        "data.val_size=20", "data.test_size=30", "data.stride=1", "data.batch_size=16", "model.horizon=5",
        "model.hidden_size=8", "--max-steps", "4", data=tmp_path)
    assert report["task"] == "forecast" and report["unit"] == "samples"
    assert report["tutorial"] is None and report["tutorial_status"].startswith("not applicable")
    check_loop(report["lstm_train"], 4, 4 * 16)
    check_loop(report["floor"], 4, 4 * 16)
    assert report["floor_ratio"] > 0 and report["speedup"] is None and report["flops_per_sample"] is None


def test_bench_json_on_a_text_job_prints_one_json_object(tmp_path: Path) -> None:
    """A text job's data notes (sizes, vocabulary) go to stderr: stdout is the report alone."""
    root = Path(__file__).resolve().parents[1]
    rows = [f"{'a good' if i % 2 else 'a bad'} film {i},{'pos' if i % 2 else 'neg'}" for i in range(80)]
    (tmp_path / "d.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    proc = run_cli("bench", "--json", str(root / "jobs" / "text_csv_example.yaml"), f"data.path={tmp_path / 'd.csv'}",
                   "data.text_column=text", "model.embedding_dim=8", "model.hidden_size=8", "data.batch_size=16",
                   "--max-steps", "2", "--skip-lightning", env={"LSTM_TRAIN_DATA": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report, end = json.JSONDecoder().raw_decode(proc.stdout)
    assert proc.stdout[end:].strip() == "" and isinstance(report, dict)  # one object, nothing before or after
    assert report["task"] == "text_classify" and report["unit"] == "tokens" and report["metric"] == "test_accuracy"
    check_loop(report["lstm_train"], 2, report["lstm_train"]["units"])
    assert "2 classes; vocabulary" in proc.stderr  # the task's note, on stderr


def test_bench_takes_a_caption_job(fake_mnist: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    report, _ = bench_json(
        str(root / "jobs" / "mnist_caption.yaml"), f"data.root={fake_mnist}", "data.num_train=64",
        "data.num_test=20", "data.batch_size=16", "data.max_digits=2", "model.hidden_size=16",
        "model.channels=[4,8,8]", "model.encoder_hidden=8", "--max-steps", "2", "--skip-lightning", data=fake_mnist)
    assert report["task"] == "caption" and report["tutorial"] is None
    check_loop(report["lstm_train"], 2, 2 * 16)
    check_loop(report["floor"], 2, 2 * 16)
    assert report["precision"] == resolve_precision("bf16", force_cpu=True)  # the job's (as this CPU runs it), the floor's too


def test_units_count_tokens_in_the_loops_batch_plan() -> None:
    """`throughput_unit = "tokens"`: a step counts its sequences' lengths, batches as the loop cuts them
    (here bucketed by length, as `SequenceData` does by default)."""
    from lstm_train.bench.measure import batch_plan, global_batches, trained_units, units
    from lstm_train.data.ragged import Ragged
    from lstm_train.schema import SequenceData
    from lstm_train.tasks.base import Task

    class Tokens(Task):
        name = "tokens_test"
        throughput_unit = "tokens"

    lengths = torch.arange(1, 11)
    split = (Ragged.from_sequences([[7] * n for n in lengths.tolist()]), torch.zeros(10))
    job = SimpleNamespace(data=SequenceData(batch_size=4, bucket_pool=2), train=SimpleNamespace(grad_accum_steps=None, seed=3))
    task = Tokens(job)
    plan = batch_plan(job, task, split)
    assert plan.lengths is not None and plan.bucketing and plan.global_batch == 4
    batches = global_batches(plan, 4)  # 3 batches in epoch 0 (4, 4, 2 samples, in some order), then epoch 1
    assert sorted(len(b) for b in batches[:3]) == [2, 4, 4] and len(batches) == 4
    assert sorted(torch.cat(batches[:3]).tolist()) == list(range(10))
    assert all(torch.equal(a, b) for a, b in zip(batches, [*plan.global_batches(0), *plan.global_batches(1)]))
    assert units(task, split, batches[0]) == int(lengths[batches[0]].sum())
    assert trained_units(task, split, plan, 3) == (int(lengths.sum()), 10)  # one epoch: every token once
    images = (torch.zeros(10, 2),)
    classify = ClassifyTask(SimpleNamespace(data=SimpleNamespace(batch_size=4, global_batch_size=None),
                                            train=SimpleNamespace(grad_accum_steps=None, seed=3)))
    assert trained_units(classify, images, batch_plan(classify.job, classify, images), 3) == (10, 10)


def test_bench_scaling_writes_the_table_and_the_png(fake_mnist: Path, tmp_path: Path) -> None:
    out = tmp_path / "scaling"
    report, _ = bench_json("--scaling", "--max-steps", "2", "--seconds", "0.05", "--hidden-sizes", "8,16",
                           "--batch-sizes", "16,32", "--out", str(out), data=fake_mnist)
    axes = [(p["axis"], p["value"]) for p in report["points"]]
    assert axes == [("sequence", "28 rows x 28"), ("sequence", "784 pixels x 1"), ("hidden", "8"), ("hidden", "16"),
                    ("batch", "16"), ("batch", "32"), ("processes", "1"), ("processes", "2")]
    for p in report["points"]:
        assert 1 <= p["steps"] <= 2 and p["lstm_train"]["steps"] == p["steps"] and p["lstm_train"]["per_s"] > 0
        if p["processes"] == 1:
            assert p["floor"]["steps"] == p["steps"]
            assert p["floor_ratio"] == pytest.approx(p["floor"]["per_s"] / p["lstm_train"]["per_s"], rel=0.01)
        else:
            assert p["floor"] is None and p["lstm_train"]["world_size"] == 2
    pixels = report["points"][1]
    assert pixels["lstm_train"]["gflops"] > 0 and pixels["hidden_size"] == 64
    assert report["points"][3]["hidden_size"] == 16 and report["points"][5]["batch_size"] == 32
    assert (out / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "scaling.json").read_text())["points"] == report["points"]
    table = (out / "scaling.md").read_text().splitlines()
    assert table[0].startswith("| axis | value | steps | floor samples/s") and len(table) == 2 + len(report["points"])


def test_bench_scaling_out_is_checked_before_measuring(fake_mnist: Path, tmp_path: Path) -> None:
    """--out goes through the writers' gate: a file bench did not write is kept (without --force),
    a run's checkpoints/ never written into; both refused before a point is measured."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "scaling.json").write_text("my own notes")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("task: classify\n")
    for out, said in ((mine, f"--out {mine / 'scaling.json'}: {mine / 'scaling.json'} exists; not overwriting it "
                             "(pass --force"),
                      (run / "checkpoints", "inside the run's checkpoints/")):
        proc = run_cli("bench", "--scaling", "--max-steps", "1", "--out", str(out), env={"LSTM_TRAIN_DATA": str(fake_mnist)})
        assert proc.returncode == 2 and said in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert (mine / "scaling.json").read_text() == "my own notes" and os.listdir(run / "checkpoints") == []


def test_bench_cuda_without_a_gpu_is_a_clear_error(fake_mnist: Path) -> None:
    require(not torch.cuda.is_available(), "a GPU is visible here (this checks the message on machines without one)")
    proc = run_cli("bench", "--device", "cuda", "--max-steps", "1", env={"LSTM_TRAIN_DATA": str(fake_mnist)})
    assert proc.returncode == 2 and "--device cuda: no CUDA device visible here" in proc.stderr


def test_pixel_by_pixel_sequences(fake_mnist: Path, tmp_path: Path) -> None:
    """`data.sequence: pixels` (jobs/seq_mnist_lstm.yaml): 784 steps of one pixel, and it trains."""
    from lstm_train.bench import job_flops_per_sample
    from lstm_train.config import load_job
    from lstm_train.tasks.classify import as_sequence
    from lstm_train.train import train

    images = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
    pixels = as_sequence(images, "pixels")
    assert pixels.shape == (3, 784, 1)
    assert torch.equal(pixels[:, :, 0], images.reshape(3, 784).float() / 255)
    assert torch.equal(as_sequence(images, "rows"), as_rows(images))

    root = Path(__file__).resolve().parents[1]
    job = load_job(root / "jobs" / "seq_mnist_lstm.yaml", [
        f"data.root={fake_mnist}", "data.batch_size=16", "model.hidden_size=8", "train.max_steps=2",
        f"train.output_dir={tmp_path / 'run'}", "train.cpu=true", "tracking.wandb.mode=disabled",
    ])
    assert job.data.sequence == "pixels" and job.optim.name == "rmsprop" and job.optim.grad_clip == 1.0
    assert job_flops_per_sample(job) == lstm_flops_per_sample(784, 1, 8, 1, False, 10)
    reset_accelerate()
    result = train(job)
    reset_accelerate()
    assert result["steps"] == 2 and 0.0 <= result["test_accuracy"] <= 1.0
    from lstm_train.checkpoint import checkpoint_files, read_weights

    weights = read_weights(checkpoint_files(tmp_path / "run" / "checkpoints")[0][1])
    assert weights["encoder.lstm.weight_ih_l0"].shape == (4 * 8, 1)  # one pixel per step


def test_bench_scores_a_corpus_without_a_test_split_on_validation(tmp_path: Path) -> None:
    """A language model on one text split into train and validation only (as jobs/shakespeare_char.yaml):
    every loop is scored on validation, and the report says so (it used to end in a traceback)."""
    text = tmp_path / "corpus.txt"
    text.write_text("".join(f"the cat {i % 7} sat on the mat {i % 5}\n" for i in range(400)))
    job = tmp_path / "lm.yaml"
    job.write_text(f"name: lm_bench\ntask: language_model\ndata: {{root: {tmp_path}, files: corpus.txt, "
                   "tokenizer: chars, val_fraction: 0.1, bptt: 16, global_batch_size: 4, eval_streams: 2}\n"
                   "model: {hidden_size: 16, num_layers: 1, embedding_size: 8}\n"
                   "train: {threads: 1, mixed_precision: 'no'}\n")
    report, _ = bench_json(str(job), "--max-steps", "2", data=tmp_path)
    assert report["eval_split"] == "val" and report["metric"] == "val_loss" and report["unit"] == "tokens"
    assert report["tutorial_status"] == "measured"  # pytorch/examples' word_language_model loop
    # Lightning's TensorDataset loop has no token windows with carried state: said, not crashed on
    assert report["lightning"] is None and report["lightning_status"].startswith(("not applicable", "not installed"))
    for loop in (report["lstm_train"], report["floor"], report["tutorial"]):
        assert loop["steps"] == 2 and loop["metric"] is not None and loop["metric"] > 0


def load_script(name: str):
    """A script of scripts/ as a module (they are run as files, not imported as a package)."""
    module_name = f"lstm_train_script_{name}"
    if module_name not in sys.modules:  # registered first: dataclasses look their module up
        spec = importlib.util.spec_from_file_location(module_name, ROOT / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


def test_bench_on_a_generated_wikitext2_layout_records_every_number(tmp_path: Path) -> None:
    """jobs/wikitext2_awd_lstm.yaml (a test split) on the corpus scripts/wikitext_layout.py writes in
    WikiText-2's layout, the model shrunk: the three loops run, are scored on test, and the book's
    bench_lm entries find every number they record (issue 38)."""
    data = Path(os.environ.get("LSTM_TRAIN_DATA", ROOT.parent / "shared" / "data"))
    require(all((data / s).is_file() for s in ("tinyshakespeare/input.txt", "Multi30k/train.en")),
            f"tinyshakespeare and Multi30k not found under {data}")
    layout = load_script("wikitext_layout")
    made = layout.generate(tmp_path / "wt2", 0.05, True, data)
    assert sorted(made["files"]) == ["wiki.test.tokens", "wiki.train.tokens", "wiki.valid.tokens"]
    train = (tmp_path / "wt2" / "wiki.train.tokens").read_text()
    assert 50_000 <= len(train.encode()) < 80_000 and " = = " in train and "<unk>" in train
    assert all(line.startswith(" ") for line in train.splitlines())  # WikiText's leading space
    # Deterministic (a second folder holds the same bytes); --no-test writes no test file.
    layout.generate(tmp_path / "again", 0.05, False, data)
    assert (tmp_path / "again" / "wiki.train.tokens").read_bytes() == train.encode()
    assert not (tmp_path / "again" / "wiki.test.tokens").exists()

    report, _ = bench_json(str(ROOT / "jobs" / "wikitext2_awd_lstm.yaml"), f"data.root={tmp_path / 'wt2'}",
                           "model.embedding_size=8", "model.hidden_size=16", "model.num_layers=2",
                           "data.global_batch_size=4", "data.batch_size=4", "data.bptt=8", "data.eval_streams=2",
                           "train.threads=1", "--max-steps", "2", data=data)
    assert report["eval_split"] == "test" and report["metric"] == "test_loss" and report["unit"] == "tokens"
    for loop in (report["lstm_train"], report["floor"], report["tutorial"]):
        assert loop["steps"] == 2 and loop["units"] > 0 and loop["metric"] > 0
    # The example cuts fixed windows; the job's variable BPTT cuts the same plan for lstm_train and its floor
    assert report["tutorial"]["units"] == 2 * 4 * 8 and report["lstm_train"]["units"] == report["floor"]["units"]
    # The example's own model (untied: it ties only an embedding as wide as the LSTM), in fp32
    assert report["tutorial"]["precision"] == "no"
    assert report["tutorial"]["parameters"] > 0 and report["floor"]["parameters"] > 0
    assert report["vocab_size"] > 100
    numbers = load_script("book").bench_numbers(report)
    for key in ("lstm_train tokens/s", "word_language_model loop tokens/s", "floor tokens/s",
                "lstm_train / floor epoch time", "lstm_train vs word_language_model loop (x throughput)",
                "lstm_train test_loss", "word_language_model loop test_loss", "floor test_loss",
                "vocabulary", "steps"):
        assert numbers[key] is not None and numbers[key] > 0, key
