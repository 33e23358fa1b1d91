"""What users reach for first (issue 22): look at a job before running it (`config`,
`submit --dry-run` against the real cluster), shipped jobs from an installed wheel,
`--version` and the versions in result.json, one-line warnings, a diverged run that says so."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from importlib.metadata import version
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from lstm_train.config import load_job

from .conftest import ROOT, require, run_cli

TINY_RUN = ["tracking.wandb.mode=disabled", "train.max_steps=20", "train.log_every=5", "train.checkpoint_every=10"]


# ---------------------------------------------------------------------------
# config, --print-config, --version


def test_config_prints_the_resolved_job_without_importing_torch() -> None:
    p = run_cli("config", "mnist_lstm", "train.epochs=3", "model.hidden_size=32")
    assert p.returncode == 0, p.stderr
    printed = yaml.safe_load(p.stdout)
    assert printed == load_job(ROOT / "jobs" / "mnist_lstm.yaml", ["train.epochs=3", "model.hidden_size=32"]).to_dict()
    assert printed["train"]["epochs"] == 3 and printed["train"]["mixed_precision"] == "auto"  # defaults filled in
    alias = run_cli("run", "jobs/mnist_lstm.yaml", "--print-config", "train.epochs=3", "model.hidden_size=32")
    assert alias.returncode == 0 and alias.stdout == p.stdout, alias.stderr

    # Fast: validating (and explaining) every shipped job imports neither torch nor the task code's heavy libraries.
    probe = ("import sys, contextlib, io\nfrom lstm_train.cli import main\nfrom lstm_train.shipped import shipped\n"
             "for name in shipped():\n    with contextlib.redirect_stdout(io.StringIO()):\n"
             "        assert main(['config', name]) == 0, name\n"
             "        assert main(['config', name, '--keys']) == 0, name\n"
             "        assert main(['config', name, '--explain', 'train.select.metric']) == 0, name\n"
             "print(sorted(m for m in ('torch', 'numpy', 'submitit', 'wandb', 'statsmodels') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_config_errors_exit_2_and_name_what_is_wrong() -> None:
    typo = run_cli("config", "mnist_lstm", "train.epoch=2")
    assert typo.returncode == 2 and "unknown key 'train.epoch'. Did you mean 'train.epochs'?" in typo.stderr, typo.stderr
    bad = run_cli("config", "mnist_lstm", "optim.lr=-1")
    assert bad.returncode == 2 and "optim.lr = -1" in bad.stderr, bad.stderr
    missing = run_cli("config", "no_such_job")
    assert missing.returncode == 2 and "not a file, nor a shipped job" in missing.stderr and "mnist_lstm" in missing.stderr
    assert "Traceback" not in typo.stderr + bad.stderr + missing.stderr


def test_version() -> None:
    p = run_cli("--version")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("lstm-train 0.1.0") and f"torch {version('torch')}" in p.stdout, p.stdout
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    assert f"git {head[:12]}" in p.stdout, p.stdout


# ---------------------------------------------------------------------------
# submit --dry-run on the real cluster


def queued_names() -> str:
    squeue = subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True).stdout
    sacct = subprocess.run(["sacct", "-n", "-X", "-S", "now-1hours", "-o", "jobname%60"], capture_output=True, text=True).stdout
    return squeue + sacct


def test_submit_dry_run_asks_sbatch_and_queues_nothing(cluster: None, tmp_path: Path) -> None:
    name = f"dryrun_{uuid.uuid4().hex[:8]}"
    out = tmp_path / "run"
    ok = run_cli("submit", "mnist_lstm", "--dry-run", f"name={name}", f"train.output_dir={out}", "slurm.time_min=5")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"#SBATCH --job-name={name}" in ok.stdout and "#SBATCH --time=5" in ok.stdout, ok.stdout
    assert "submitit.core._submit" in ok.stdout and "--kill-on-bad-exit=1" in ok.stdout, ok.stdout
    assert "sbatch --test-only: Job" in ok.stdout and "in partition debug" in ok.stdout, ok.stdout
    assert "nothing submitted" in ok.stdout

    nodes = run_cli("submit", "mnist_lstm", "--dry-run", f"name={name}", f"train.output_dir={out}", "slurm.nodes=5")
    assert nodes.returncode == 2, nodes.stdout + nodes.stderr
    assert "sbatch --test-only refused the job: allocation failure: Requested node configuration is not available" \
        in nodes.stderr, nodes.stderr
    assert "#SBATCH --nodes=5" in nodes.stdout  # the script is shown even when refused

    sweep = run_cli("submit", "sweep_example", "--dry-run", f"name={name}", f"train.output_dir={tmp_path / 'sweep'}")
    assert sweep.returncode == 0 and "#SBATCH --array=0-3%2" in sweep.stdout, sweep.stdout + sweep.stderr

    assert not out.exists() and not (tmp_path / "sweep").exists()  # nothing written
    assert name not in queued_names()  # nothing queued, now or earlier

    # An account the cluster does not know: SLURM's own refusal.
    enforce = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    require("AccountingStorageEnforce = associations" in enforce or "AccountingStorageEnforce = assoc" in enforce,
            "the cluster does not enforce associations, so sbatch takes any account: "
            "`sudo slurm/local-cluster.sh up` (its slurm.conf sets AccountingStorageEnforce=associations)")
    account = run_cli("submit", "mnist_lstm", "--dry-run", f"name={name}", f"train.output_dir={out}",
                      "slurm.account=no_such_account")
    assert account.returncode == 2, account.stdout + account.stderr
    assert "sbatch --test-only refused the job" in account.stderr and "nvalid account" in account.stderr, account.stderr
    assert name not in queued_names()


# ---------------------------------------------------------------------------
# Shipped jobs, from a wheel installed in a fresh virtual environment


def test_wheel_lists_and_runs_a_shipped_job_by_name(tmp_path: Path, mnist_root: Path) -> None:
    source = tmp_path / "src"  # build from a copy: the checkout gets no build/ folder
    shutil.copytree(ROOT, source, symlinks=True,
                    ignore=shutil.ignore_patterns(".venv", ".git", "runs", "build", "*.egg-info", "__pycache__", "wandb"))
    wheels = tmp_path / "wheels"
    import setuptools  # pyproject's build requirement; when it is older, pip fetches one to build with

    isolation = ["--no-build-isolation"] if int(setuptools.__version__.split(".")[0]) >= 68 else []
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation,
                            "-w", str(wheels), str(source)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    wheel = next(wheels.glob("lstm_train-*.whl"))

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next(venv.glob("lib/python*/site-packages"))
    # The libraries (torch, ...) come from this interpreter's site-packages, whose .pth files
    # (an editable lstm_train among them) are not read from a folder named in a .pth.
    here = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (site / "zz_libraries.pth").write_text("\n".join(here) + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                              "--no-deps", str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr
    env = {**os.environ, "LSTM_TRAIN_DATA": str(mnist_root), "WANDB_MODE": "disabled", "PYTHONPATH": ""}
    exe = str(venv / "bin" / "lstm-train")
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import lstm_train; print(lstm_train.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, env=env)
    assert where.stdout.startswith(str(site)), where.stdout + where.stderr

    listing = subprocess.run([exe, "jobs"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert listing.returncode == 0, listing.stderr
    rows = {ln.split()[0]: ln.split()[1:3] for ln in listing.stdout.splitlines()[1:]}
    assert rows["mnist_lstm"] == ["classify", "mnist"] and rows["ud_ewt_upos"][0] == "tag", listing.stdout
    assert set(rows) == {p.stem for p in (ROOT / "jobs").glob("*.yaml")}
    assert "The tutorial's example exactly" in listing.stdout

    copied = subprocess.run([exe, "jobs", "copy", "mnist_lstm", "mine"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert copied.returncode == 0 and (tmp_path / "mine").read_text() == (ROOT / "jobs" / "mnist_lstm.yaml").read_text()
    again = subprocess.run([exe, "jobs", "copy", "mnist_lstm", "mine"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert again.returncode == 2 and "not overwriting" in again.stderr

    run = subprocess.run([exe, "run", "mnist_lstm", "train.max_steps=5", "train.output_dir=out", "train.cpu=true"],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["steps"] == 5 and result["diverged"] is False
    assert result["versions"] == {"lstm_train": "0.1.0", "git_commit": None,  # an installed wheel: no checkout
                                  **{lib: version(lib) for lib in ("torch", "accelerate", "submitit", "wandb")}}


# ---------------------------------------------------------------------------
# Messages: one-line warnings; a run that diverged without a NaN


def test_diverged_run_says_so_and_warnings_are_one_line(tmp_path: Path, fake_mnist: Path) -> None:
    out = tmp_path / "run"
    env = {"LSTM_TRAIN_DATA": str(fake_mnist)}
    p = run_cli("run", "mnist_lstm", "optim.lr=1e6", "train.epochs=3", f"train.output_dir={out}", *TINY_RUN, env=env)
    assert p.returncode == 0, p.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["diverged"] is True, result
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("warning: training diverged") and "optim.lr" in last, p.stderr
    assert "warning: training diverged: the train loss ended at" in p.stderr, p.stderr
    assert "UserWarning" not in p.stderr and "warnings.warn" not in p.stderr, p.stderr
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    assert result["versions"]["git_commit"].removesuffix("+dirty") == head  # run from this checkout

    # The example: predict on a run whose newest checkpoint is unreadable.
    steps = sorted((out / "checkpoints").glob("step-*"))
    assert len(steps) == 2, steps  # steps 10 and 20: predict falls back to the older one
    damaged = steps[-1] / "model.safetensors" if steps[-1].is_dir() else steps[-1]
    damaged.write_bytes(b"not a checkpoint")
    image = tmp_path / "digit.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(image)
    predict = run_cli("predict", str(out), str(image), env=env)
    warned = [ln for ln in predict.stderr.splitlines() if "unreadable" in ln]
    assert warned and all(ln.startswith("warning: ") for ln in warned), predict.stderr
    assert "UserWarning" not in predict.stderr and ".py:" not in predict.stderr, predict.stderr
