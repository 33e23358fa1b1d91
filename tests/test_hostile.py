"""Issue 37 on real files and real processes: whatever a user receives from someone else (a run
directory, a checkpoint, a cache's units, a data file) neither runs, nor leaks, nor is trained on
unchecked, and a writer never replaces what it did not create.

Each class of the issue has its tests here: code named by a run directory (a planted module that
would create a file: the file is never created), tampered preparation units (never merged),
overwrite targets (refused), symlinked run files (not followed, not echoed), bounded readers
(under an address-space limit), and the checks named by their flag or key."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from lstm_train.data.streams import base, language_model
from lstm_train.data.store import entry_format, runner
from lstm_train.data.streams.language_model import LanguageModelStream

from .conftest import ROOT, run_cli
from .test_lm_stream import data_section, entry_digest, text_file

TINY_FORECAST = ["data.sine.series=4", "data.sine.length=300", "data.val_size=40", "data.test_size=60", "data.classical=none",
                 "model.hidden_size=8", "train.max_steps=4", "tracking.wandb.mode=disabled",
                 "train.mixed_precision=no"]


def cli(capsys: pytest.CaptureFixture, *args: str) -> SimpleNamespace:
    """`lstm-train ARGS` in this process (where the process itself is not what is tested): its
    exit code and what it printed, as `run_cli` gives them."""
    from lstm_train.cli import main

    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out, stderr=err)


def one_line_error(proc, code: int = 2) -> str:  # noqa: ANN001 - a CompletedProcess
    """The error of a refused command: exit `code`, no traceback, one `error:` line."""
    assert proc.returncode == code, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny forecasting run (4 steps), trained in-process once for the module."""
    import torch

    from lstm_train.config import load_job
    from lstm_train.train import train

    run = tmp_path_factory.mktemp("hostile") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(load_job(str(ROOT / "jobs" / "sine_forecast.yaml"), [*TINY_FORECAST, f"train.output_dir={run}"]))
    finally:
        torch.set_num_threads(threads)
    return run


def received(trained: Path, where: Path, task: str | None = None) -> Path:
    """A copy of the run as someone else's folder holds it, its config.yaml naming `task`."""
    copy = where / "received"
    shutil.copytree(trained, copy)
    if task is not None:
        config = copy / "config.yaml"
        config.write_text("\n".join(f"task: {task}" if line.startswith("task:") else line
                                    for line in config.read_text().splitlines()) + "\n")
    return copy


# ---------------------------------------------------------------------------
# 1. Nothing a run directory names is imported unless installed or named by the user


def plant(folder: Path, name: str, marker: Path, body: str = "") -> None:
    """A module `name` in `folder` that creates `marker` when imported."""
    (folder / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n{body}")


def test_a_module_planted_beside_a_run_never_runs(trained: Path, tmp_path: Path) -> None:
    run = received(trained, tmp_path, "evil:Task")
    marker = tmp_path / "it-ran"
    plant(run, "evil", marker)
    plant(tmp_path, "evil", marker)
    # from inside the run directory (python -m puts the current folder first on sys.path), with an
    # empty PYTHONPATH entry (the current folder again), for predict, its --help, evaluate and export
    attempts = [(("predict", str(run), "0.1", "0.2"), run, str(ROOT)),
                (("predict", str(run), "--help"), run, str(ROOT)),
                (("evaluate", str(run), str(tmp_path / "x.csv")), tmp_path, f"{ROOT}::")]
    for args, cwd, pythonpath in attempts:
        proc = run_cli(*args, cwd=cwd, env={"PYTHONPATH": pythonpath})
        assert not marker.exists(), (args, proc.stderr[-2000:])
        if args[-1] == "--help":
            assert proc.returncode == 0 and "usage:" in proc.stdout
            continue
        line = one_line_error(proc)
        assert f"{run / 'config.yaml'}: task = 'evil:Task'" in line and "is not a file of an installed package" in line
        assert "--task evil:Task or LSTM_TRAIN_TASKS=evil:Task" in line


def test_a_run_may_not_import_the_standard_library_or_name_modules_relatively(trained: Path, tmp_path: Path,
                                                                              capsys: pytest.CaptureFixture) -> None:
    for task, said in (("this:X", "this ("), ("antigravity:X", "antigravity ("),
                       (".evil:Task", ".evil is a relative module name"), ("..evil:Task", "relative module name"),
                       ("evil-x:Task", "is not a reference"), ("no_such_module_anywhere:X", "no module named")):
        (tmp_path / str(len(task) + ord(task[0]))).mkdir()
        run = received(trained, tmp_path / str(len(task) + ord(task[0])), task)
        proc = cli(capsys, "predict", str(run), "0.1", "0.2")
        line = one_line_error(proc)
        assert f"task = {task!r}" in line and said in line, line
        assert "Beautiful is better than ugly" not in proc.stdout + proc.stderr and "this" not in sys.modules


def test_a_task_the_user_names_is_imported_and_its_failures_are_one_line(trained: Path, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "it-ran"
    run = received(trained, tmp_path, "mine:Task")
    plant(tmp_path, "mine", marker, "Task = 1\n")
    proc = run_cli("predict", str(run), "0.1", "--task", "mine:Task", cwd=tmp_path, env={"PYTHONPATH": f"{ROOT}"})
    assert marker.exists() and "task = 'mine:Task': names a int, not a Registration" in one_line_error(proc)
    marker.unlink()
    proc = run_cli("predict", str(run), "0.1", cwd=tmp_path, env={"PYTHONPATH": f"{ROOT}", "LSTM_TRAIN_TASKS": "x:Y, mine:Task"})
    assert marker.exists() and "names a int, not a Registration" in one_line_error(proc)
    (tmp_path / "broken.py").write_text("x = 1\ndef f(:\n    secret_text_here\n")
    (tmp_path / "raising.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # named by the user: imported from sys.path, failing in one line
    for ref, said in (("broken:Task", "cannot import broken: SyntaxError in broken.py line 2"),
                      ("raising:Task", "cannot import raising: it raised RuntimeError (boom at import)")):
        proc = cli(capsys, "predict", str(run), "0.1", "--task", ref)
        line = one_line_error(proc)
        assert f"task = {ref!r}: {said}" in line and "secret_text_here" not in proc.stderr, line


def test_built_in_tasks_still_load_from_a_run_directory(trained: Path, capsys: pytest.CaptureFixture) -> None:
    proc = cli(capsys, "predict", str(trained), *[str(v / 10) for v in range(40)])
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr[-2000:]


# ---------------------------------------------------------------------------
# 2. Preparation units are merged only as their workers wrote them


def test_tampered_units_of_an_interrupted_preparation_are_never_merged(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(base, "PIECE_BYTES", 8192)
    text = text_file(tmp_path / "c.txt", lines=1500)
    clean = LanguageModelStream(data_section(text, "chars"))
    runner.run(clean, tmp_path / "clean", tmp_path / "clean-work", runner.Options(workers=1))
    # an interrupted `prepare --workers 2`: every unit done, nothing merged yet
    out = tmp_path / "out"
    stream = LanguageModelStream(data_section(text, "chars"))
    runner.run(stream, out / "first", out / "work", runner.Options(workers=2))
    units = sorted((out / "work").glob("unit-*"))
    assert len(units) >= 4 and all((u / "done.json").is_file() for u in units)
    # 1. a unit's column replaced by other ids of the same shape (its header still valid)
    replaced = units[0] / "train.0.npy"
    ids = np.load(replaced)
    np.save(replaced, np.zeros_like(ids), allow_pickle=False)
    # 2. a done.json that names a file outside the cache, with a digest that matches it
    outside = tmp_path / "outside.npy"
    np.save(outside, np.zeros_like(ids), allow_pickle=False)
    done = json.loads((units[1] / "done.json").read_text())
    done["splits"]["train"][0]["file"] = "../../outside.npy"
    done["digests"]["../../outside.npy"] = entry_format.file_digest(outside)
    (units[1] / "done.json").write_text(json.dumps(done))
    # 3. a unit's column swapped for a symlink to a file of the same content elsewhere
    link = units[2] / "train.0.npy"
    shutil.copy(link, tmp_path / "elsewhere.npy")
    link.unlink()
    link.symlink_to(tmp_path / "elsewhere.npy")
    capsys.readouterr()
    runner.run(stream, out / "entry", out / "work", runner.Options(workers=2))
    said = capsys.readouterr().err
    assert entry_digest(out / "entry") == entry_digest(tmp_path / "clean")
    for unit, why in ((units[0], "its digest differs"), (units[1], "not a plain name inside the entry"),
                      (units[2], "is not a plain file")):
        assert f"{unit} from an earlier, interrupted preparation is not merged" in said and why in said, said


# ---------------------------------------------------------------------------
# 3. A writer never replaces what it did not create, never a run's own files


def test_outputs_never_replace_a_runs_files_or_anything_not_theirs(trained: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    run = received(trained, tmp_path)
    run_cli = lambda *args, cwd=None: cli(capsys, *args)  # noqa: E731 - in this process
    monkeypatch.chdir(tmp_path)
    weights = sorted(run.glob("checkpoints/*/model.safetensors"))[0]
    kept = {p: p.read_bytes() for p in (weights, run / "config.yaml", run / "result.json")}
    for target in kept:
        proc = run_cli("compare", str(run), str(trained), "--out", str(target), "--force")
        line = one_line_error(proc)
        assert f"--out {target}" in line and ("inside the run's checkpoints/" in line or "a file of the run" in line)
    assert all(p.read_bytes() == b for p, b in kept.items())
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"my own picture")
    line = one_line_error(run_cli("compare", str(run), str(trained), "--out", str(mine)))
    assert f"{mine} exists; not overwriting it (pass --force" in line
    assert mine.read_bytes() == b"my own picture"
    ours = tmp_path / "ours.png"
    for _ in range(2):  # compare's own PNG is written again without --force
        proc = run_cli("compare", str(run), str(trained), "--out", str(ours))
        assert proc.returncode == 0 and ours.read_bytes().startswith(b"\x89PNG"), proc.stderr[-2000:]
    assert run_cli("compare", str(run), str(trained), "--out", str(mine), "--force").returncode == 0
    assert mine.read_bytes().startswith(b"\x89PNG")
    # report: a file in the run directory it did not write is kept; its own PNGs are written again
    (run / "report-loss.png").write_bytes(b"not a plot of ours")
    line = one_line_error(run_cli("report", str(run)))
    assert "report-loss.png exists; not overwriting it" in line and not (run / "report-eval.png").exists()
    assert (run / "report-loss.png").read_bytes() == b"not a plot of ours"
    assert run_cli("report", str(run), "--force").returncode == 0
    assert run_cli("report", str(run)).returncode == 0 and (run / "report-loss.png").read_bytes().startswith(b"\x89PNG")
    # jobs copy over an existing file: only with --force
    (tmp_path / "job.yaml").write_text("mine")
    assert "job.yaml exists; not overwriting it" in one_line_error(run_cli("jobs", "copy", "mnist_lstm", "job.yaml",
                                                                           cwd=tmp_path))
    assert run_cli("jobs", "copy", "mnist_lstm", "job.yaml", "--force", cwd=tmp_path).returncode == 0
    assert (tmp_path / "job.yaml").read_text() != "mine"


def test_a_run_writes_its_outputs_over_planted_links_never_through_them(trained: Path, tmp_path: Path) -> None:
    """What a run writes into its own directory as it ends (tables, plots, samples, metrics) goes
    through the writers' gate: a symlink planted at the name is replaced, never written through; a
    folder there is refused, naming it; a planted metrics log link is refused before training."""
    import torch

    from lstm_train.config import load_job
    from lstm_train.files.outputs import OutputRefused, write_run_output
    from lstm_train.runfiles import RunFileError
    from lstm_train.tasks.language_model import _append_sample
    from lstm_train.train import train

    victim = tmp_path / "victim.txt"
    victim.write_text("someone's own file\n")
    run = received(trained, tmp_path)

    def conclude_again() -> dict:
        """The finished run made unfinished: training concludes again, writing its outputs again."""
        (run / "result.json").unlink(missing_ok=True)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return train(load_job(str(ROOT / "jobs" / "sine_forecast.yaml"), [*TINY_FORECAST, f"train.output_dir={run}"]))
        finally:
            torch.set_num_threads(threads)

    for name in ("forecast_table.txt", "forecast.png"):
        (run / name).unlink()
        (run / name).symlink_to(victim)
    assert conclude_again()["steps"] == 4
    assert victim.read_text() == "someone's own file\n"
    assert not (run / "forecast.png").is_symlink() and (run / "forecast.png").read_bytes().startswith(b"\x89PNG")
    assert not (run / "forecast_table.txt").is_symlink() and "LSTM" in (run / "forecast_table.txt").read_text()

    (run / "forecast_table.txt").unlink()
    (run / "forecast_table.txt").mkdir()
    with pytest.raises(OutputRefused, match="forecast_table.txt exists and is not a plain file"):
        conclude_again()
    (run / "forecast_table.txt").rmdir()

    log = run / "metrics" / "rank-0.jsonl"
    log.unlink()
    log.symlink_to(victim)
    with pytest.raises(RunFileError, match="rank-0.jsonl: a symlink; a run's metrics are written only to a plain file"):
        conclude_again()
    assert victim.read_text() == "someone's own file\n"

    samples = tmp_path / "samples.txt"  # a language model's samples: the earlier ones never read through a link
    samples.symlink_to(victim)
    _append_sample(samples, "--- step 1", "text")
    assert samples.read_text() == "--- step 1\ntext\n" and victim.read_text() == "someone's own file\n"
    for name in ("config.yaml", "model.safetensors", "checkpoints", "../elsewhere.txt"):
        with pytest.raises(ValueError, match="not a name a run's output may have"):
            write_run_output(run, name, "x")


# ---------------------------------------------------------------------------
# 4. The weights a run reports are the weights every command uses


@pytest.fixture(scope="module")
def averaged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A finished run with train.ema and no validation data: its test metric is the average's."""
    import torch

    from lstm_train.config import load_job
    from lstm_train.train import train

    run = tmp_path_factory.mktemp("averaged") / "run"
    args = [*TINY_FORECAST, "data.val_size=0", "train.ema=0.5", "optim.lr=0.05", f"train.output_dir={run}"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(load_job(str(ROOT / "jobs" / "sine_forecast.yaml"), args))
    finally:
        torch.set_num_threads(threads)
    return run, args


def test_every_command_uses_the_weights_the_result_was_computed_with(averaged: tuple[Path, list[str]]) -> None:
    import torch

    from lstm_train.checkpoint import checkpoint_files, read_weights
    from lstm_train.cli import load_run
    from lstm_train.data.store import prepared
    from lstm_train.data.batching import eval_batches_for
    from lstm_train.tasks.base import evaluate_sums, split_size

    run, _ = averaged
    result = json.loads((run / "result.json").read_text())
    assert result["evaluated_weights"] == "ema 0.5" and not (run / "checkpoints" / "best").exists()

    def test_metric(model: torch.nn.Module) -> float:
        job, task, _, info = loaded
        test = prepared.load(task).test
        sums = evaluate_sums(task, model, test, eval_batches_for(job.data, split_size(test), 0, 1, task.lengths(test)),
                             task.autocast(torch.device("cpu")), info)
        return task.metrics({k: float(v) for k, v in sums.items()}, info, prefix="test_")[result["primary_metric"]]

    loaded = load_run(run)  # what predict, evaluate, export and generate load
    assert test_metric(loaded[2]) == pytest.approx(result[result["primary_metric"]], rel=1e-6)
    raw = loaded[1].build_model(loaded[3])
    raw.load_state_dict(read_weights(checkpoint_files(run / "checkpoints")[0][1]))
    assert test_metric(raw) != pytest.approx(result[result["primary_metric"]], rel=1e-6)
    from lstm_train.artifact import stage_artifact
    from lstm_train.checkpoint import load_for_predict

    _, _, shipped = load_for_predict(stage_artifact(run, selected=False))  # the W&B model artifact: the same weights
    assert all(torch.equal(shipped[k], v) for k, v in loaded[2].state_dict().items())


def test_averaged_weights_of_another_shape_are_refused_before_any_write(averaged: tuple[Path, list[str]],
                                                                       tmp_path: Path) -> None:
    import safetensors.torch

    from lstm_train.checkpoint import CheckpointMismatch, checkpoint_files
    from lstm_train.config import load_job
    from lstm_train.train import train

    trained_run, args = averaged
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "result.json").unlink()  # an interrupted run, resumed
    newest = checkpoint_files(run / "checkpoints")[0][1]
    average = safetensors.torch.load_file(newest / "average.safetensors")
    name = next(iter(average))
    average[name] = average[name].new_zeros([s + 1 for s in average[name].shape])
    safetensors.torch.save_file(average, newest / "average.safetensors")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(CheckpointMismatch, match=rf"average.safetensors: averaged tensors of another shape .*{name}"):
        train(load_job(str(ROOT / "jobs" / "sine_forecast.yaml"), [*args[:-1], f"train.output_dir={run}"]))
    assert before == {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}


# ---------------------------------------------------------------------------
# 5. A run's files are read as plain files only, and errors never quote them


def test_run_files_are_never_followed_through_symlinks_nor_quoted(trained: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    run_cli = lambda *args: cli(capsys, *args)  # noqa: E731 - in this process
    secret = tmp_path / "secret.yaml"  # a file of the victim's, YAML-shaped
    secret.write_text("hunter2_login: hunter2_password\nother: value\n")
    run = received(trained, tmp_path)
    config = run / "config.yaml"
    text = config.read_text()
    config.unlink()
    config.symlink_to(secret)
    line = one_line_error(run_cli("predict", str(run), "0.1", "0.2"))
    assert "config.yaml: a symlink" in line
    meta = sorted(run.glob("checkpoints/*/meta.json"))[0]
    config.unlink()
    config.write_text(text + "hunter2_login: hunter2_password\n")  # an unknown key: its line, not its text
    proc = run_cli("predict", str(run), "0.1", "0.2")
    assert proc.returncode == 2 and "hunter2" not in proc.stderr + proc.stdout, proc.stderr
    assert f"line {len(text.splitlines()) + 1}: a key this lstm_train does not know" in proc.stderr
    config.write_text(text + "train: {epochs: hunter2_password}\nx: [hunter2\n")  # not YAML: its line
    line = one_line_error(run_cli("predict", str(run), "0.1", "0.2"))
    assert "not valid YAML at line" in line and "hunter2" not in line
    config.write_text(text)
    meta_text = meta.read_bytes()
    for checkpoint in run.glob("checkpoints/*/meta.json"):
        checkpoint.unlink()
        checkpoint.symlink_to(secret)
    proc = run_cli("predict", str(run), "0.1", "0.2")
    assert proc.returncode == 2 and "meta.json: a symlink" in proc.stderr and "hunter2" not in proc.stderr, proc.stderr
    assert meta_text


# ---------------------------------------------------------------------------
# 6. What used to end in a traceback is one line naming the file or flag


def forged_npy(path: Path, shape: tuple[int, ...]) -> Path:
    """A .npy whose header claims `shape` float64 values, followed by 80 bytes."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": shape})
        f.write(b"\0" * 80)
    return path


def test_a_forged_array_header_is_refused_before_anything_is_allocated(tmp_path: Path) -> None:
    from lstm_train.data import sequences
    from lstm_train.data.sequences import Columns, SequenceDataError

    x = forged_npy(tmp_path / "x.npy", (10**6, 10**6))  # 8 TB claimed
    np.save(tmp_path / "y.npy", np.zeros(10))
    with pytest.raises(SequenceDataError, match=r"x.npy: its header claims \[1000000, 1000000\] float64 "
                                                r"\(8,000,000,000,000 bytes\) but 80 bytes follow it"):
        sequences.read([str(x), str(tmp_path / "y.npy")], Columns(), "npy")
    import zipfile

    with zipfile.ZipFile(tmp_path / "d.npz", "w", zipfile.ZIP_DEFLATED) as z:  # the member claims 8 TB too
        z.writestr("x.npy", forged_npy(tmp_path / "member.npy", (10**6, 10**6)).read_bytes())
    with pytest.raises(SequenceDataError, match=r"d.npz \(array x\): its header claims .* but \d+ bytes follow it"):
        sequences.read(str(tmp_path / "d.npz"), Columns(), "npz")


def test_a_reader_that_leaves_early_gets_what_it_read_and_the_plots_are_written(trained: Path, tmp_path: Path) -> None:
    import subprocess

    run = received(trained, tmp_path)
    env = {**os.environ, "WANDB_MODE": "disabled"}
    env.pop("PYTHONUNBUFFERED", None)  # block-buffered, as in a terminal pipe: the write fails at the end
    for args, png in ((["report", str(run)], run / "report-loss.png"),
                      (["compare", str(run), str(trained), "--out", str(tmp_path / "c.png")], tmp_path / "c.png")):
        proc = subprocess.Popen([sys.executable, "-m", "lstm_train", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, cwd=ROOT)
        proc.stdout.close()  # `| head` that has already left
        err = proc.stderr.read().decode()
        proc.wait(timeout=120)
        assert proc.returncode == 141 and "Traceback" not in err and "Exception ignored" not in err, err
        assert png.read_bytes().startswith(b"\x89PNG")


def test_export_of_a_task_that_cannot_be_exported_says_so(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from lstm_train.export import export
    from lstm_train.tasks.language_model import LanguageModelTask

    task = LanguageModelTask.__new__(LanguageModelTask)  # the class's own refusal: no data is read for it
    with pytest.raises(ValueError, match=r"task language_model cannot be exported: .*\(exportable: classify"):
        export((SimpleNamespace(), task, None, {}), tmp_path, "onnx", tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


# ---------------------------------------------------------------------------
# 7. Nothing trains silently on what cannot be learned, no flag is ignored


def test_corpora_and_sequences_with_nothing_to_learn_are_refused(tmp_path: Path) -> None:
    from lstm_train.config import validate_job
    from lstm_train.data.sequences import SequenceDataError
    from lstm_train.data.lm_tokenizer import CorpusError
    from lstm_train.tasks.sequence import SequenceTask

    for tokenizer, content, said in (("chars", "\n" * 5000, r"one token repeated \(only line breaks\?\)"),
                                     ("words", "\n" * 5000, r"one token repeated \(only line breaks\?\)"),
                                     ("chars", "a", "empty")):
        text = tmp_path / f"{tokenizer}{len(content)}.txt"
        text.write_text(content)
        with pytest.raises(CorpusError, match=rf"the training text is {said}: nothing to learn"):
            runner.run(LanguageModelStream(data_section(text, tokenizer)), tmp_path / text.stem, tmp_path / "w",
                       runner.Options(workers=1))
    rows = "".join(f"s{i},{t},{v},{label}\n" for i, (v, label) in enumerate([(0.5, "a"), ("inf", "b")] * 4)
                   for t in range(3))
    (tmp_path / "inf.csv").write_text("id,time,f0,label\n" + rows)
    (tmp_path / "one.csv").write_text("id,time,f0,label\n" + rows.replace("inf", "0.25").replace(",b\n", ",a\n"))
    for name, said in (("inf", r"inf.csv: sequence number 2 has an infinite value"),
                       ("one", r"one.csv: every training label is 'a': one class, nothing to learn")):
        job = validate_job({"name": "s", "task": "sequence", "model": {"hidden_size": 4},
                            "data": {"train": str(tmp_path / f"{name}.csv"), "test": str(tmp_path / "inf.csv"),
                                     "id_column": "id", "time_column": "time"}}, "t")
        with pytest.raises(SequenceDataError, match=said):
            SequenceTask(job).load_data()


def test_flags_and_keys_that_would_be_ignored_or_are_not_numbers_are_named(tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from argparse import Namespace

    from lstm_train.tasks.language_model import cmd_generate

    job = str(ROOT / "jobs" / "sine_forecast.yaml")
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text((ROOT / "jobs" / "sine_forecast.yaml").read_text()
                     + "sweep:\n  parameters:\n    model.hiden_size: {values: [8, 16]}\n")
    for args, said in ((["prepare", job, "--workers", "0"], "--workers 0: give 1 or more processes"),
                       (["prepare", job, "--workers", "-1"], "--workers -1: give 1 or more"),
                       (["prepare", job, "--shards", "2"], "--shards 2: only with --executor slurm"),
                       (["config", job, "optim.lr=.inf"], "optim.lr"),
                       (["config", str(sweep), "optim.lr=.nan"], "optim.lr"),
                       (["config", str(sweep)], "sweep.parameters.model.hiden_size: 'model.hiden_size' is not a job "
                                                "key. Did you mean 'model.hidden_size'?")):
        assert said in one_line_error(cli(capsys, *args)), args
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))  # no sbatch
    assert "--executor slurm: no sbatch on PATH" in one_line_error(cli(capsys, "prepare", job, "--executor", "slurm"))
    with pytest.raises(ValueError, match="--samples 0: must be between 1 and"):
        cmd_generate(None, {}, Namespace(samples=0, seed=1))
    said = subprocess.run([sys.executable, "-c", "from lstm_train.distributed import make_accelerator; "
                           "make_accelerator('fp16', True)"], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert said.returncode == 0 and "warning: train.mixed_precision=fp16 on a CPU" in said.stderr, said.stderr[-2000:]


# ---------------------------------------------------------------------------
# 8. Readers are bounded: a line without end is refused once a bound is read, not read whole


def under_memory_limit(code: str, limit: int = 1 << 30) -> subprocess.CompletedProcess:
    """`code` in a fresh Python whose address space is limited to `limit` bytes (ulimit -v)."""
    import resource

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          preexec_fn=limited, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_a_line_without_end_is_refused_within_a_bound_of_memory(tmp_path: Path) -> None:
    big = tmp_path / "one-line.csv"
    with open(big, "wb") as f:  # 300 MB, no line break: sparse, so it costs no disk
        f.truncate(300 << 20)
    code = ("import sys, time; from lstm_train.data.readers import textfiles\n"
            "t = time.perf_counter()\n"
            "try:\n"
            f"    textfiles.read_table({str(big)!r}, 'text', 'label')\n"
            "except textfiles.TextDataError as e:\n"
            "    print(e, round(time.perf_counter() - t, 2))\n")
    proc = under_memory_limit(code, 700 << 20)  # less than the line's bytes decoded would need
    assert proc.returncode == 0 and "one-line.csv:1: a line of more than 64 MiB without a line break" in proc.stdout, \
        proc.stderr[-2000:]


def test_a_text_to_score_or_translate_is_read_a_line_at_a_time(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A language model's `predict --file` streams its file (`language_model.text_lines`, ids a group of
    lines at a time): a line without end is refused once 64 MiB are read, within a bound of
    memory; parallel corpora are read by the same bounded line reader."""
    big = tmp_path / "one-line.txt"
    with open(big, "wb") as f:  # 300 MB of NUL characters, no line break: sparse, so it costs no disk
        f.truncate(300 << 20)
    code = ("from lstm_train.data import lm_tokenizer\n"
            "from lstm_train.data.streams.language_model import text_lines\n"
            "tokenizer = lm_tokenizer.Tokenizer('chars', ['\\x00', 'a'])\n"
            "try:\n"
            f"    print(sum(len(ids) for ids in tokenizer.encode_lines(text_lines({str(big)!r}))))\n"
            "except lm_tokenizer.CorpusError as e:\n"
            "    print(e)\n")
    proc = under_memory_limit(code, 700 << 20)  # less than the line decoded and encoded would need
    assert proc.returncode == 0 and "one-line.txt:1: a line of more than 64 MiB without a line break" in proc.stdout, \
        proc.stderr[-2000:]

    from lstm_train.data import textio
    from lstm_train.data.parallel import ParallelDataError, read_line_aligned

    source, target = tmp_path / "a.de", tmp_path / "a.en"
    source.write_text("Hallo\n" + "Wort " * 400 + "\n")
    target.write_text("Hello\nWords\n")
    assert read_line_aligned(source, target).source[0] == "Hallo"
    monkeypatch.setattr(textio, "MAX_LINE_BYTES", 1024)
    with pytest.raises(ParallelDataError, match=r"a\.de:2: a line of more than .* without a line break"):
        read_line_aligned(source, target)


def test_a_long_line_of_words_prepares_in_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = tmp_path / "line.txt"
    words = " ".join(f"w{i % 5000}" for i in range(60_000))  # one line of ~400 KB, then lines to split off
    text.write_text(words + "\n" + "".join(f"w{i} w{i + 1} end\n" for i in range(20_000)))
    blocks = LanguageModelStream(data_section(text, "words"))
    whole = run_stream_ids(blocks, tmp_path / "whole")
    monkeypatch.setattr(language_model, "BLOCK_BYTES", 4096)  # the line is ~100 blocks: cut before spaces
    assert run_stream_ids(LanguageModelStream(data_section(text, "words")), tmp_path / "blocks") == whole
    assert max(len(b) for _, b in blocks._blocks(blocks.pieces()[0], "line")) <= 2 * 4096


def run_stream_ids(stream: LanguageModelStream, out: Path) -> list[int]:
    runner.run(stream, out / "entry", out / "work", runner.Options(workers=1))
    return [int(i) for f in sorted((out / "entry").glob("*.npy")) for i in np.load(f)]


# ---------------------------------------------------------------------------
# 9. Launching: the time budget holds whatever the step speed; one process where several were asked


def test_the_time_budget_is_kept_between_logged_steps(tmp_path: Path) -> None:
    import torch

    from lstm_train.config import load_job
    from lstm_train.train import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # no sync is due for 100,000 steps: only the budget can end it
        result = train(load_job(str(ROOT / "jobs" / "sine_forecast.yaml"), [
            *TINY_FORECAST, "train.max_steps=100000", "data.val_size=0", "train.max_seconds=3",
            "train.log_every=100000", "train.checkpoint_every=100000", "train.epochs=1000",
            f"train.output_dir={tmp_path / 'run'}"]))
    finally:
        torch.set_num_threads(threads)
    # it ends at the last step that leaves room for the next one: just short of 3 s, never far past
    assert result["stopped_at_time_limit"] and 2.5 <= result["train_seconds"] < 4, result["train_seconds"]
    # a run with validation data leaves the budget room for the final validation a stop still runs
    from lstm_train.timelimit import Reserve
    from lstm_train.train import LoopState, past_budget

    state = LoopState(seconds_before=50.0, step=10, last_eval=5, reserve=Reserve(eval_seconds=12.0))
    run = SimpleNamespace(job=SimpleNamespace(train=SimpleNamespace(max_seconds=60)), splits=SimpleNamespace(val=()))
    assert past_budget(run, state)  # 50 s trained + a 12 s validation to come: past 60 s
    state.last_eval = 10
    assert not past_budget(run, state)  # validated at this very step: nothing more to run


def budget_checks(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Every `train.max_seconds` decision an in-process run makes, as the loop made it: the step, the
    training seconds it compared, what a stop then still reserved, the final validation's expected
    time, the evaluation time spent so far, and the decision.  A recording wrapper around the loop's
    own `past_budget` (it still decides): facts of the run, not a clock read afterwards."""
    from lstm_train.train import deadline, steps

    real, checks = deadline.past_budget, []

    def recorded(run, state) -> bool:  # noqa: ANN001
        seconds = state.seconds()
        past = real(run, state)
        checks.append({"step": state.step, "seconds": seconds, "reserved": deadline.reserved(run, state),
                       "expected": state.reserve.eval_seconds, "evaluated": state.eval_seconds, "past": past})
        return past

    monkeypatch.setattr(deadline, "past_budget", recorded)  # time_due's check at every step
    monkeypatch.setattr(steps, "past_budget", recorded)  # sync's
    return checks


def test_a_budget_leaves_room_for_a_final_validation_none_had_timed(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """No validation is due before the budget ends (eval_every_steps is out of reach), and the
    validation split is large: the run foresees the final validation (a probe of a few windows)
    and stops early enough that training time, the final validation included, stays in budget.

    Asserted on the run's own decisions and measured times, not on a quiet machine's clock: on a
    loaded one (three pytest workers on two cores) the validation may run slower than its probe
    said, and the run still must have held back what the probe foresaw."""
    import torch

    from lstm_train.config import load_job
    from lstm_train.timelimit import LOAD_RATIO
    from lstm_train.train import train

    rng = np.random.default_rng(0)
    text = tmp_path / "data" / "c.txt"
    text.parent.mkdir()
    text.write_text("".join(rng.choice(list("abcdefgh \n"), 600_000)))  # the last half validates
    job = tmp_path / "lm.yaml"
    job.write_text(json.dumps({
        "name": "budget_lm", "task": "language_model",
        "data": {"root": str(text.parent), "files": text.name, "bptt": 32, "global_batch_size": 8, "val_fraction": 0.5,
                 "eval_streams": 4, "cache_dir": str(tmp_path / "cache")},
        "model": {"hidden_size": 96, "num_layers": 1, "embedding_size": 16, "dropout": 0.0},
        "train": {"epochs": 1000, "max_seconds": BUDGET_S, "eval_every_steps": 10**9, "checkpoint_every": 10**9,
                  "log_every": 10**9, "mixed_precision": "no", "threads": 1, "output_dir": str(tmp_path / "run")},
        "tracking": {"wandb": {"mode": "disabled"}}}))
    checks = budget_checks(monkeypatch)
    threads = torch.get_num_threads()
    try:
        result = train(load_job(str(job), []))
    finally:
        torch.set_num_threads(threads)
    stops = [c for c in checks if c["past"]]
    assert stops and not any(c["past"] for c in checks[:checks.index(stops[0])]), checks[-3:]
    stop = stops[0]
    # the probe (the only evaluation before the stop) foresaw the final validation; what ran after the stop is that validation
    final = result["eval_seconds"] - stop["evaluated"]
    print(f"stop {stop}, final validation {final:.2f} s, train_seconds {result['train_seconds']}")
    assert result["stopped_at_time_limit"] and result["steps"] == stop["step"], (result, stop)
    assert stop["expected"] is not None and final > 1.0, (stop, final)  # a validation worth reserving for
    # What the stop held back is the foreseen validation (scaled by the steps' change of speed, within LOAD_RATIO),
    # not a step's time, and the run stopped with many of its own steps' worth of budget left for it: a run that
    # reserved only the next step stops a step or two short of BUDGET_S.  (Its steps and its validation slow
    # alike on a loaded machine; here the validation is a hundred steps or more.  Where the validation is
    # foreseen to take more than what is left at the probe, the run stops at the probe, PROBE_AT of the budget.)
    assert stop["reserved"] >= LOAD_RATIO[0] * stop["expected"] and stop["seconds"] + stop["reserved"] >= BUDGET_S
    assert BUDGET_S - stop["seconds"] > 10 * stop["seconds"] / stop["step"], stop
    # The probe measured the validation it stands for: its estimate is of the final validation's order (a factor
    # of 10 either way: a load that changes between the probe and the end moves it by a few times, 2.2 seen with
    # three pytest workers and a busy loop on two cores; a step's time or a made-up constant is not of this order).
    assert final / 10 < stop["expected"] < final * 10, (stop, final)
    # As a whole the run ends before a run without the reserve would, at BUDGET_S + the final validation (strictly:
    # it stopped the reserve before BUDGET_S), and not much before the budget (lower: a reserve far too large).
    assert BUDGET_S - result["eval_seconds"] - 1.0 <= result["train_seconds"] < BUDGET_S + final, (result, final)


BUDGET_S = 5.0


def test_a_launch_of_several_processes_that_started_one_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from lstm_train.distributed import DistributedSetupError, launched_world_size

    for name in ("WORLD_SIZE", "RANK", "SLURM_STEP_NUM_TASKS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")  # what `accelerate launch --num_processes 2` sets, no --multi_gpu
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    with pytest.raises(DistributedSetupError, match="without --multi_gpu it runs one process"):
        launched_world_size()
    monkeypatch.setenv("WORLD_SIZE", "2")  # with --multi_gpu: torch.distributed.run sets the world
    assert launched_world_size() == 2
