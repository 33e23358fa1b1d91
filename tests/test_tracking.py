"""Tracking with the real wandb (offline, or online against a dead local port): what lands
in the `.wandb` files and the JSONL, resume, failure handling, and the report plots.

No wandb mocks: the runs are read back with `tests/wandb_records.py`.  Nothing here
touches ~/.netrc, ~/.config/wandb or any network beyond 127.0.0.1.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import time
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from lstm_train.config import JobBase
from lstm_train.tracking import (
    Tracker,
    TrackingWarning,
    WorkerInfo,
    has_credentials,
    resolve_mode,
    wandb_run_id,
)

from .conftest import result_of, run_cli
try:  # `python -m pytest` from the repo root, or tests/ as a package
    from tests.wandb_records import config_values, read_runs
except ImportError:  # plain `pytest`: tests/ itself is on sys.path
    from wandb_records import config_values, read_runs  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def wandb_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A clean W&B environment: no inherited WANDB_* settings, no home files, no prompts."""
    for key in list(os.environ):
        if key.startswith("WANDB_") or key == "NETRC":
            monkeypatch.delenv(key)
    home = tmp_path / "wandb-home"
    monkeypatch.setenv("NETRC", str(home / "netrc"))  # absent file: no credentials
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(home / "config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(home / "cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(home / "data"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")  # leave pytest's output capture alone
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    monkeypatch.setenv("LSTM_TRAIN_WANDB_INIT_TIMEOUT", "3")


def make_job(**wandb: Any) -> JobBase:
    return JobBase(name="tiny", tracking={"wandb": {"mode": "offline", **wandb}})


def train_row(step: int, rank: int) -> dict[str, float]:
    return {"loss": 2.0 / (step + 1) + 0.01 * rank, "global_loss": 2.0 / (step + 1), "lr": 0.01 * 0.99**step,
            "samples_per_s": 1000.0 + 10 * rank + step, "epoch": step // 4}


def eval_row(step: int, rank: int) -> dict[str, float]:
    return {"test/loss": 1.0 / (step + 1), "test/accuracy": 0.5 + step / 100,
            "test/shard_loss": 1.0 / (step + 1) + 0.1 * rank, "test/shard_accuracy": 0.5 + step / 100 - 0.01 * rank}


def drive(trackers: list[Tracker], steps: range, eval_every: int = 4) -> None:
    """A small 'training loop': every rank logs each step, evaluates every few steps."""
    for step in steps:
        for t in trackers:
            t.log(step, train_row(step, t.worker.rank))
        if step % eval_every == eval_every - 1:
            for t in trackers:
                t.log(step, eval_row(step, t.worker.rank))


def jsonl(run_dir: Path, rank: int) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics" / f"rank-{rank}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def metrics_only(row: dict[str, Any]) -> dict[str, Any]:
    """A row without bookkeeping: W&B's `_step`/`_runtime`/`_timestamp`, the JSONL's `time`."""
    return {k: v for k, v in row.items() if not k.startswith("_") and k != "time"}


def test_every_rank_logs_its_own_run_in_one_group(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    job = make_job(tags=["unit"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrackingWarning)  # the happy path warns about nothing
        trackers = [Tracker(job, run_dir, "job42", WorkerInfo(r, r, 2, "cpu")) for r in range(2)]
        assert [t.mode for t in trackers] == ["offline", "offline"]
        drive(trackers, range(8))
        png = tmp_path / "pic.png"
        import matplotlib.pyplot as plt

        plt.imsave(png, [[0.0, 1.0], [1.0, 0.0]])
        trackers[0].log_images(7, {"prediction": png})
        for t in trackers:
            t.finish({"test_accuracy": 0.57, "train_seconds": 1.5})

    runs = read_runs(run_dir / "wandb")
    assert len(runs) == 2
    assert {r.group for r in runs} == {f"tiny-{time.strftime('%Y-%m-%d')}"}  # <job>-<date begun>: for people
    assert sorted(r.name for r in runs) == ["tiny-rank0", "tiny-rank1"]
    assert len({r.run_id for r in runs}) == 2
    for run in runs:
        rank = int(run.name.rsplit("rank", 1)[1])
        assert run.run_id == wandb_run_id("tiny", "job42", rank)
        assert run.project == "lstm_train" and run.tags == ["unit"]
        config = config_values(run.config)
        assert config["rank"] == rank and config["local_rank"] == rank
        assert config["world_size"] == 2 and config["device"] == "cpu" and config["hostname"]
        assert config["name"] == "tiny" and config["optim"]["lr"] == 0.01  # the resolved job spec
        assert config["versions"]["lstm_train"] == "0.1.0" and config["versions"]["wandb"] == metadata.version("wandb")
        assert run.metrics["*"] == "step"  # every chart is against our step, not W&B's _step
        history = [metrics_only(h) for h in run.history if not any(k == "prediction" for k in h)]
        local = [metrics_only(r) for r in jsonl(run_dir, rank) if "images" not in r]
        assert history == local  # the same rows with the same values, in order
        assert [h["loss"] for h in history if "loss" in h] == [train_row(s, rank)["loss"] for s in range(8)]
        accuracy = [(h["step"], h["test/accuracy"], h["test/shard_accuracy"]) for h in history if "test/accuracy" in h]
        assert accuracy == [(s, eval_row(s, rank)["test/accuracy"], eval_row(s, rank)["test/shard_accuracy"]) for s in (3, 7)]
        assert run.summary["test_accuracy"] == 0.57 and run.summary["train_seconds"] == 1.5
        assert run.exit_code == 0
        summary = json.loads((run_dir / "metrics" / f"rank-{rank}-summary.json").read_text())
        assert summary == {"test_accuracy": 0.57, "train_seconds": 1.5}
    images = [h for h in runs[0].history + runs[1].history if "prediction" in h]
    assert len(images) == 1 and images[0]["prediction"]["_type"] == "image-file" and images[0]["step"] == 7
    assert jsonl(run_dir, 0)[-1]["images"] == {"prediction": str(png)}


def test_resume_continues_the_same_run_and_keeps_rows_with_lower_steps(tmp_path: Path) -> None:
    run_dir, job, worker = tmp_path / "run", make_job(), WorkerInfo(0, 0, 1, "cpu")
    first = Tracker(job, run_dir, "77", worker)
    drive([first], range(0, 6))
    first.finish({"status": "preempted"}, exit_code=1)
    # requeued: resumes from a checkpoint at step 3, so steps 3..5 come again
    second = Tracker(job, run_dir, "77", worker)
    assert second.wandb_id == first.wandb_id
    drive([second], range(3, 9))
    second.finish({"test_accuracy": 0.6})

    runs = read_runs(run_dir / "wandb")
    assert [r.run_id for r in runs] == [first.wandb_id] * 2  # one W&B run, two pieces (synced in order)
    assert runs[0].exit_code == 1 and runs[1].exit_code == 0
    resumed_steps = [h["step"] for h in runs[1].history if "loss" in h]
    assert resumed_steps == list(range(3, 9))  # nothing dropped although steps went back from 5 to 3
    assert [h["_step"] for h in runs[1].history] == sorted(h["_step"] for h in runs[1].history)
    train = [r for r in jsonl(run_dir, 0) if "loss" in r]
    assert [r["step"] for r in train] == [0, 1, 2, 3, 4, 5, 3, 4, 5, 6, 7, 8]  # local file: appended


def test_unreachable_server_warns_once_and_training_goes_on(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # discard port: connection refused
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    run_dir = tmp_path / "run"
    started = time.monotonic()
    with pytest.warns(TrackingWarning) as caught:
        tracker = Tracker(make_job(mode="online"), run_dir, "5", WorkerInfo(0, 0, 1, "cpu"))
        drive([tracker], range(8))
        tracker.finish({"test_accuracy": 0.5})
    # measured 3.7 s (two inits, the online one cut at its 3 s init timeout); well under what ignoring that
    # timeout costs (wandb.init's own default waits 90 s), with room for a loaded machine's slower starts
    assert time.monotonic() - started < 60
    ours = [w for w in caught if issubclass(w.category, TrackingWarning)]
    assert len(ours) == 1 and "online" in str(ours[0].message) and "offline" in str(ours[0].message)
    assert tracker.mode == "offline"  # fell back: the rows can still be synced later
    local = jsonl(run_dir, 0)
    assert [r["step"] for r in local if "loss" in r] == list(range(8))
    assert len([r for r in local if "test/accuracy" in r]) == 2
    (offline,) = [r for r in read_runs(run_dir / "wandb") if r.history]
    assert [metrics_only(h) for h in offline.history] == [metrics_only(r) for r in local]


def test_online_without_credentials_never_prompts(tmp_path: Path) -> None:
    with pytest.warns(TrackingWarning, match="no W&B credentials"):
        tracker = Tracker(make_job(mode="online"), tmp_path, "6", WorkerInfo(0, 0, 1, "cpu"))
    assert tracker.mode == "offline"
    tracker.finish({})


def _wandb_service_pids() -> list[int]:
    """Our own wandb-core children (started by this test process, so ours to kill)."""
    pids = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"wandb-core" in cmdline:
                pids.append(int(pid))
    return pids


def test_wandb_service_dying_mid_run_turns_wandb_off_with_one_warning(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    tracker = Tracker(make_job(), run_dir, "9", WorkerInfo(0, 0, 1, "cpu"))
    drive([tracker], range(4))
    pids = _wandb_service_pids()
    assert pids, "expected a wandb-core service process"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    with pytest.warns(TrackingWarning) as caught:
        drive([tracker], range(4, 12))
        tracker.log_images(11, {"x": tmp_path / "missing.png"})
        tracker.finish({"test_accuracy": 0.5})
    assert len([w for w in caught if issubclass(w.category, TrackingWarning)]) == 1
    assert tracker.mode == "disabled"
    assert [r["step"] for r in jsonl(run_dir, 0) if "loss" in r] == list(range(12))
    # wandb's process state was reset: the next run in this process works again
    again = Tracker(make_job(), tmp_path / "again", "10", WorkerInfo(0, 0, 1, "cpu"))
    assert again.mode == "offline"
    again.finish({})


def test_disabled_writes_only_jsonl(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrackingWarning)
        tracker = Tracker(make_job(mode="disabled"), tmp_path, "1", WorkerInfo(3, 1, 4, "cuda:1"))
        drive([tracker], range(4))
        tracker.finish({})
    assert tracker.mode == "disabled" and not (tmp_path / "wandb").exists()
    assert [r["step"] for r in jsonl(tmp_path, 3)] == [0, 1, 2, 3, 3]


def test_shared_mode_needs_online_and_falls_back_to_one_run_per_rank(tmp_path: Path) -> None:
    with pytest.warns(TrackingWarning, match="shared"):
        tracker = Tracker(make_job(shared=True), tmp_path, "s1", WorkerInfo(1, 1, 2, "cpu"))
    assert not tracker.shared and tracker.wandb_id == wandb_run_id("tiny", "s1", 1)
    tracker.finish({})


def test_mode_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert resolve_mode("auto") == "offline"  # no credentials anywhere: never a login prompt
    assert resolve_mode("disabled") == "disabled"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode("auto") == "disabled" and resolve_mode("online") == "online"
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert resolve_mode("auto") == "offline"
    monkeypatch.delenv("WANDB_MODE")
    netrc = tmp_path / "netrc"
    netrc.write_text("machine wandb.example.org\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert not has_credentials()  # an entry, but for another host than api.wandb.ai
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    assert has_credentials() and resolve_mode("auto") == "online"
    monkeypatch.delenv("WANDB_BASE_URL")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert resolve_mode("auto") == "online"
    monkeypatch.setenv("WANDB_DISABLED", "true")
    assert resolve_mode("auto") == "disabled"


def test_wandb_run_ids_are_stable_valid_and_distinct() -> None:
    assert wandb_run_id("mnist", "123", 0) == "mnist-123-r0" == wandb_run_id("mnist", "123", 0)
    assert wandb_run_id("mnist", "123", None) == "mnist-123"
    odd = wandb_run_id("mnist", "a/b:c#d", 1)
    assert not set(odd) & set(":;,#?/' ") and odd != wandb_run_id("mnist", "a_b-c_d", 1)
    long = [wandb_run_id("n" * 50, "x" * 40, r) for r in range(3)]
    assert all(len(i) <= 64 for i in long) and len(set(long)) == 3


# ---------------------------------------------------------------------------
# report


def test_report_plots_the_jsonl_values(tmp_path: Path) -> None:
    from matplotlib.image import imread

    from lstm_train.report import collect, figures, report

    run_dir = tmp_path / "runs" / "tiny" / "job42"
    trackers = [Tracker(make_job(mode="disabled"), run_dir, "job42", WorkerInfo(r, r, 2, "cpu")) for r in range(2)]
    drive(trackers, range(12))
    for t in trackers:
        t.finish({})
    (run_dir / "result.json").write_text(json.dumps({"test_accuracy": 0.61, "train_seconds": 3.25, "world_size": 2}))

    out = io.StringIO()
    pngs = report(run_dir, out=out)
    assert sorted(p.name for p in pngs) == ["report-eval.png", "report-loss.png", "report-throughput.png"]
    for png in pngs:
        assert png.parent == run_dir and png.stat().st_size > 10_000
        height, width = imread(png).shape[:2]
        assert width > 500 and height > 300
    text = out.getvalue()
    assert "tiny / job42" in text and "test_accuracy=0.61" in text and "train_seconds=3.25" in text
    rank1_line = next(line for line in text.splitlines() if line.split()[:1] == ["1"])
    assert f"{train_row(11, 1)['loss']:.4g}" in rank1_line and f"{eval_row(11, 1)['test/shard_accuracy']:.4g}" in rank1_line

    # the plotted lines carry exactly the JSONL numbers (read here independently of report)
    figs = figures(collect(run_dir))
    lines = {name: {ax.get_title(): {l.get_label(): l.get_xydata().tolist() for l in ax.get_lines()} for ax in fig.axes}
             for name, fig in figs.items()}
    rows = {r: jsonl(run_dir, r) for r in range(2)}

    def expected(rank: int, key: str) -> list[list[float]]:
        return [[float(row["step"]), float(row[key])] for row in rows[rank] if key in row]

    (loss,) = lines["report-loss.png"].values()
    assert loss["rank 0"] == expected(0, "loss") and loss["rank 1"] == expected(1, "loss")
    assert loss["global (mean over ranks)"] == expected(0, "global_loss")
    (speed,) = lines["report-throughput.png"].values()
    assert speed["rank 1"] == expected(1, "samples_per_s")
    accuracy = lines["report-eval.png"]["test accuracy per evaluation"]
    assert accuracy["global"] == expected(0, "test/accuracy")
    assert accuracy["rank 1 shard"] == expected(1, "test/shard_accuracy")
    assert len(accuracy["global"]) == 3
    assert "test loss per evaluation" in lines["report-eval.png"]
    assert all("tiny / job42" in (fig.axes[0].get_title() + (fig._suptitle.get_text() if fig._suptitle else ""))
               for fig in figs.values())


def test_report_of_a_resumed_run_keeps_the_last_row_per_step(tmp_path: Path) -> None:
    from lstm_train.report import collect, series

    worker = WorkerInfo(0, 0, 1, "cpu")
    first = Tracker(make_job(mode="disabled"), tmp_path, "r", worker)
    drive([first], range(6))
    first.finish({})
    second = Tracker(make_job(mode="disabled"), tmp_path, "r", worker)
    for step in range(3, 8):
        second.log(step, {**train_row(step, 0), "loss": 100.0 + step})
    second.finish({})
    x, y = series(collect(tmp_path))["loss"]["rank 0"]
    assert x == [float(s) for s in range(8)]
    assert y == [train_row(s, 0)["loss"] for s in range(3)] + [100.0 + s for s in range(3, 8)]


def test_tensorboard_of_a_resumed_run_keeps_the_last_row_per_step(tmp_path: Path) -> None:
    """tracking.tensorboard: a requeued run resumes from its checkpoint of step 3 and logs steps
    4..7 again; the first attempt's events from step 4 on are purged, so TensorBoard's reader
    shows each step once, the later value, as the JSONL's reader does (step 3's evaluation, from
    before the checkpoint, stays).  Off (the default), no folder is made."""
    worker = WorkerInfo(0, 0, 1, "cpu")
    job = JobBase(name="tiny", tracking={"wandb": {"mode": "disabled"}, "tensorboard": True})
    first = Tracker(job, tmp_path, "r", worker)
    drive([first], range(6))
    first.finish({})
    second = Tracker(job, tmp_path, "r", worker)
    second.resumed_at(3)
    for step in range(4, 8):
        second.log(step, {**train_row(step, 0), "loss": 100.0 + step})
    second.finish({})
    assert len(list((tmp_path / "tensorboard" / "rank-0").glob("events.out.tfevents.*"))) == 2
    steps = assert_tensorboard_matches_jsonl(tmp_path, 0)
    assert steps["loss"] == list(range(8)) and steps["test/accuracy"] == [3]

    off = tmp_path / "off"
    Tracker(make_job(mode="disabled"), off, "r", worker).finish({})
    assert not (off / "tensorboard").exists()


def test_report_before_any_evaluation(tmp_path: Path) -> None:
    from lstm_train.report import report

    tracker = Tracker(make_job(mode="disabled"), tmp_path, "r", WorkerInfo(0, 0, 1, "cpu"))
    drive([tracker], range(3), eval_every=100)
    tracker.finish({})
    out = io.StringIO()
    pngs = report(tmp_path, out=out)
    assert sorted(p.name for p in pngs) == ["report-loss.png", "report-throughput.png"]
    assert "no evaluation yet" in out.getvalue() and "not written" in out.getvalue()


def test_report_without_metrics_names_the_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lstm_train.report import ReportError, report

    with pytest.raises(ReportError, match=str(tmp_path / "metrics")):
        report(tmp_path)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "rank-0.jsonl").write_text("")
    with pytest.raises(ReportError, match="no metric rows"):
        report(tmp_path)
    proc = run_cli("report", str(tmp_path))  # the CLI: a user error, exit 2 like every other
    assert proc.returncode == 2 and "no metric rows" in proc.stderr and "Traceback" not in proc.stderr


def test_tables_and_the_model_artifact_reach_the_offline_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    tracker = Tracker(make_job(), run_dir, "job7", WorkerInfo(0, 0, 1, "cpu"), primary=("accuracy", True))
    tracker.log(3, {"val/accuracy": 0.5})
    tracker.log(6, {"val/accuracy": 0.7})
    tracker.log(9, {"val/accuracy": 0.6})
    tracker.log_table("examples", ["source", "hypothesis"], [["ein Mann", "a man"], ["zwei", "two"]])
    staged = run_dir / "model-artifact"
    staged.mkdir()
    for name in ("model.safetensors", "meta.json", "config.yaml", "vocab.json", "result.json"):
        (staged / name).write_text("{}")
    tracker.log_model(staged, "latest", {"test_accuracy": 0.61})  # nothing selected on validation data
    tracker.finish({"test_accuracy": 0.61})
    assert (run_dir / "metrics" / "examples.tsv").read_text() == "source\thypothesis\nein Mann\ta man\nzwei\ttwo\n"
    (run,) = read_runs(run_dir / "wandb")
    assert any(isinstance(row.get("examples"), dict) and row["examples"].get("_type") == "table-file"
               for row in run.history)
    (artifact,) = [a for a in run.artifacts if a["type"] == "model"]  # (the table is a run-table artifact)
    assert artifact["type"] == "model" and artifact["name"] == "tiny-job7" and artifact["aliases"] == ["latest"]
    assert artifact["files"] == ["config.yaml", "meta.json", "model.safetensors", "result.json", "vocab.json"]
    assert artifact["metadata"] == {"test_accuracy": 0.61}
    assert run.summary["val/accuracy"] == {"max": 0.7}  # the summary keeps the best validation value


def test_the_model_artifact_is_a_usable_model(tmp_path: Path) -> None:
    """A run that selects a model on validation data logs one artifact (alias best) of the best
    weights, config.yaml, the run files (here the vocabulary) and result.json, staged inside
    the run directory; laid out as `wandb artifact get` downloads it (each file at its
    artifact path), it predicts what the run directory predicts."""
    from .test_text import sentiment_csv

    out = tmp_path / "run"
    job = ["jobs/text_csv_example.yaml", f"data.path={sentiment_csv(tmp_path / 'reviews.csv')}",
           "data.text_column=review", f"train.output_dir={out}", "train.epochs=3", "model.embedding_dim=16",
           "model.hidden_size=16", "data.batch_size=16", "optim.lr=0.01", "train.mixed_precision=no"]
    proc = run_cli("run", *job, env={"WANDB_MODE": "offline"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = read_runs(out / "wandb")
    (artifact,) = [a for a in run.artifacts if a["type"] == "model"]
    assert "best" in artifact["aliases"] and artifact["metadata"] == {"test_accuracy": result_of(out)["test_accuracy"]}
    assert {"model.safetensors", "meta.json", "config.yaml", "vocab.json", "result.json"} <= set(artifact["files"])
    assert "state.pt" not in artifact["files"] and "confusion_matrix.png" not in artifact["files"]
    downloaded = tmp_path / "artifacts" / "text_csv_example:v0"
    downloaded.mkdir(parents=True)
    for name, local in artifact["local_paths"].items():
        assert Path(local).is_relative_to(out), f"{name} staged outside the run directory: {local}"
        shutil.copyfile(local, downloaded / name)
    assert json.loads((downloaded / "meta.json").read_text())["step"] == result_of(out)["best_step"]
    texts = ["--text", "a great film", "--text", "dull and boring", "--text", "the plot"]
    from_run, from_artifact = run_cli("predict", str(out), *texts), run_cli("predict", str(downloaded), *texts)
    assert from_run.returncode == 0 and from_artifact.returncode == 0, from_artifact.stderr[-3000:]
    assert from_artifact.stdout == from_run.stdout and len(from_run.stdout.splitlines()) == 3


# ---------------------------------------------------------------------------
# through the real training loop: 2 processes (accelerate launch, gloo on CPU)


def test_two_process_training_logs_every_rank(tmp_path: Path, fake_mnist: Path) -> None:
    from lstm_train.report import report
    from tests.conftest import accelerate_cli

    run_dir = tmp_path / "run"
    # 512 training images, batch 64 per rank: 4 steps per epoch; 3 epochs, an evaluation after each
    done = accelerate_cli(2, "run", str(REPO / "jobs" / "mnist_lstm.yaml"), f"data.root={fake_mnist}",
                          "train.epochs=3", "train.log_every=2", "train.threads=1", f"train.output_dir={run_dir}",
                          "train.run_id=t2p", "tracking.wandb.mode=offline", "tracking.tensorboard=true", timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "TrackingWarning" not in done.stderr

    runs = read_runs(run_dir / "wandb")
    assert sorted(r.name for r in runs) == ["mnist_lstm-rank0", "mnist_lstm-rank1"]
    began = json.loads((run_dir / "started.json").read_text())["date"]
    assert {r.group for r in runs} == {f"mnist_lstm-{began}"} and len({r.run_id for r in runs}) == 2
    rows: dict[int, list[dict[str, Any]]] = {}
    for run in runs:
        config = config_values(run.config)
        rank = config["rank"]
        assert config["world_size"] == 2 and config["device"].startswith("cpu") and config["train"]["epochs"] == 3
        local = [metrics_only(r) for r in jsonl(run_dir, rank) if "images" not in r]
        assert [metrics_only(h) for h in run.history if not any(isinstance(v, dict) for v in h.values())] == local
        rows[rank] = local
    train = {r: [row for row in rows[r] if "loss" in row] for r in (0, 1)}
    assert [row["step"] for row in train[0]] == list(range(2, 13, 2)) == [row["step"] for row in train[1]]
    assert [row["global_loss"] for row in train[0]] == [row["global_loss"] for row in train[1]]
    assert any(a["loss"] != b["loss"] for a, b in zip(train[0], train[1]))  # each rank its own shard
    for a, b in zip(train[0], train[1]):
        assert a["global_loss"] == pytest.approx((a["loss"] + b["loss"]) / 2, rel=1e-5)
    evals = {r: [row for row in rows[r] if "test/accuracy" in row] for r in (0, 1)}
    assert [row["step"] for row in evals[0]] == [4, 8, 12] == [row["step"] for row in evals[1]]
    last = {r: evals[r][-1] for r in (0, 1)}
    result = json.loads((run_dir / "result.json").read_text())
    assert last[0]["test/accuracy"] == last[1]["test/accuracy"] == pytest.approx(result["test_accuracy"])
    shard_mean = (last[0]["test/shard_accuracy"] + last[1]["test/shard_accuracy"]) / 2  # 100 test images each
    assert shard_mean == pytest.approx(last[0]["test/accuracy"])
    assert len(report(run_dir, out=io.StringIO())) == 3
    assert [row["samples"] for row in train[0]] == [128 * s for s in range(2, 13, 2)]  # both ranks' 64 a step
    for rank in (0, 1):  # tracking.tensorboard: the same rows again, as TensorBoard's own reader sees them
        assert_tensorboard_matches_jsonl(run_dir, rank)


def assert_tensorboard_matches_jsonl(run_dir: Path, rank: int) -> dict[str, list[int]]:
    """`<run dir>/tensorboard/rank-<R>` read back with TensorBoard's EventAccumulator: one scalar
    per numeric key of the rank's JSONL, with its steps and values (of a step logged twice,
    before and after a resume, the later row, as `report` reads them: each step once), and the
    pictures it logged as images.  The steps per tag."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rows = [r for r in jsonl(run_dir, rank) if "images" not in r]
    expected: dict[str, dict[int, float]] = {}
    for row in rows:
        for key, value in metrics_only(row).items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                expected.setdefault(key, {})[row["step"]] = value
    events = EventAccumulator(str(run_dir / "tensorboard" / f"rank-{rank}"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == sorted(expected), (rank, events.Tags())
    steps = {}
    for key, by_step in expected.items():
        scalars = events.Scalars(key)
        assert [e.step for e in scalars] == sorted(by_step), (rank, key)
        assert [e.value for e in scalars] == pytest.approx([by_step[s] for s in sorted(by_step)], rel=1e-6)
        steps[key] = [e.step for e in scalars]
    pictures = {name for r in jsonl(run_dir, rank) for name in r.get("images", {})}
    assert set(events.Tags()["images"]) == pictures
    return steps
