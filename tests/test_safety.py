"""Safe to share (issue 20): run files written privately and atomically, run directories of
others refused, no credential in anything written, check first and write after, one submit at
a time, every file read back validated, plain names."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from lstm_train import runfiles
from lstm_train.config import validate_job

from .conftest import ROOT, job_env, run_cli

TEXT_JOB = "jobs/text_csv_example.yaml"
TINY = ["model.embedding_dim=8", "model.hidden_size=8", "data.batch_size=16", "train.epochs=1",
        "train.mixed_precision=no", "train.checkpoint_every=2"]


def reviews(path: Path, labels: tuple[str, ...] = ("pos", "neg"), n: int = 60) -> Path:
    words = {"pos": "great fine good", "neg": "dull bad awful", "mid": "so so okay"}
    rows = ["text,label"] + [f"{words[labels[i % len(labels)]]} film {i},{labels[i % len(labels)]}" for i in range(n)]
    path.write_text("\n".join(rows) + "\n")
    return path


def tree_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------
# Files and directories


def test_a_symlink_at_a_temporary_name_is_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    run = tmp_path / "run"
    run.mkdir()
    # The old writer's name was predictable (.result.json.<pid>.tmp): plant a link there and at the target.
    (run / f".result.json.{os.getpid()}.tmp").symlink_to(victim)
    (run / "config.yaml").symlink_to(victim)
    runfiles.write_json(run / "result.json", {"ok": 1})
    runfiles.write_atomic(run / "config.yaml", "name: x\n")
    assert victim.read_text() == "keep me\n"
    assert not (run / "config.yaml").is_symlink() and (run / "config.yaml").read_text() == "name: x\n"
    # Whatever the name, creating a temporary never follows or reuses what is there.
    link = run / ".planted.tmp"
    link.symlink_to(victim)
    with pytest.raises(FileExistsError):
        runfiles.create_private(link)
    assert victim.read_text() == "keep me\n"
    # No temporaries left, and files are not readable by others.
    assert sorted(p.name for p in run.iterdir() if p.name.endswith(".tmp")) == sorted(
        [f".result.json.{os.getpid()}.tmp", ".planted.tmp"])
    assert stat.S_IMODE((run / "result.json").stat().st_mode) & 0o077 & ~0o040 == 0


def test_run_dirs_are_0750_or_narrower_as_the_umask_says(tmp_path):
    old = os.umask(0o022)
    try:
        made = runfiles.make_run_dir(tmp_path / "a" / "b")
        assert stat.S_IMODE(made.stat().st_mode) == 0o750 and stat.S_IMODE(made.parent.stat().st_mode) == 0o750
        os.umask(0o077)
        assert stat.S_IMODE(runfiles.make_run_dir(tmp_path / "c").stat().st_mode) == 0o700
        runfiles.write_json(tmp_path / "c" / "x.json", {})
        assert stat.S_IMODE((tmp_path / "c" / "x.json").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_a_run_dir_of_another_user_is_refused(tmp_path):
    assert os.geteuid() == 0, "this test chowns a directory to nobody: run the suite as root (CI does)"
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    import pwd

    os.chown(theirs, pwd.getpwnam("nobody").pw_uid, -1)
    with pytest.raises(runfiles.UnsafeRunDir, match="belongs to user nobody"):
        runfiles.make_run_dir(theirs)
    data = reviews(tmp_path / "r.csv")
    done = run_cli("run", TEXT_JOB, f"data.path={data}", f"train.output_dir={theirs}", *TINY,
                   "tracking.wandb.mode=disabled", timeout=300)
    assert done.returncode == 2 and "belongs to user nobody" in done.stderr, done.stderr[-2000:]
    assert list(theirs.iterdir()) == []

    everyone = tmp_path / "everyone"
    everyone.mkdir()
    everyone.chmod(0o777)
    with pytest.raises(runfiles.UnsafeRunDir, match="writable by every user"):
        runfiles.check_run_dir(everyone)
    group = tmp_path / "group"
    group.mkdir()
    group.chmod(0o770)
    with pytest.warns(UserWarning, match="writable by its group"):
        runfiles.check_run_dir(group)


# ---------------------------------------------------------------------------
# Secrets


def test_redaction_and_the_setup_warning():
    spec = {"name": "x", "data": {"tokenizer": "words", "max_tokens": 5},
            "slurm": {"setup": ["export WANDB_API_KEY=abc123", "module load cuda", "HF_TOKEN='t 1' run"],
                      "additional": {"api_key": "zz"}}}
    out = runfiles.redact(spec)
    assert out["data"] == spec["data"] and out["slurm"]["setup"] == [
        "export WANDB_API_KEY=<redacted>", "module load cuda", "HF_TOKEN=<redacted> run"]
    assert out["slurm"]["additional"]["api_key"] == "<redacted>"
    assert set(runfiles.shareable(spec)) == {"name", "data"}
    with pytest.warns(UserWarning, match="slurm.setup exports WANDB_API_KEY"):
        validate_job({"name": "x", "task": "text_classify", "data": {"source": "files", "path": "a.csv"},
                      "slurm": {"setup": ["export WANDB_API_KEY=abc123"]}}, "test")


def test_no_credential_in_any_file_written(tmp_path):
    key, token = "0123456789abcdef0123456789abcdef01234567", "hf_SeCrEtToKeN42"
    env = {**job_env(tmp_path, tmp_path), "WANDB_API_KEY": key, "WANDB_MODE": "offline"}
    data = reviews(tmp_path / "r.csv")
    run, wandb_dir = tmp_path / "run", tmp_path / "wandb"
    wandb_dir.mkdir()
    done = run_cli("run", TEXT_JOB, f"data.path={data}", f"train.output_dir={run}", *TINY,
                   "tracking.wandb.mode=offline", f"tracking.wandb.dir={wandb_dir}",
                   f"slurm.setup=[\"export HF_TOKEN={token}\", \"export WANDB_API_KEY={key}\"]",
                   env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "slurm.setup exports HF_TOKEN, WANDB_API_KEY" in done.stderr
    files = [p for folder in (run, wandb_dir) for p in folder.rglob("*") if p.is_file()]
    assert any(p.name.endswith(".wandb") for p in files) and (run / "config.yaml").is_file()
    leaks = [str(p) for p in files if key.encode() in p.read_bytes() or token.encode() in p.read_bytes()]
    assert leaks == []


# ---------------------------------------------------------------------------
# Check first, write after


def test_a_refused_resume_leaves_the_run_dir_byte_identical(tmp_path):
    two = reviews(tmp_path / "two.csv")
    three = reviews(tmp_path / "three.csv", ("pos", "neg", "mid"))
    run = tmp_path / "run"
    done = run_cli("run", TEXT_JOB, f"data.path={two}", f"train.output_dir={run}", *TINY,
                   "tracking.wandb.mode=disabled", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (run / "result.json").unlink()  # as if it had been interrupted
    before = tree_hashes(run)
    for changed in ([f"data.path={three}"], [f"data.path={two}", "model.hidden_size=12"]):
        refused = run_cli("run", TEXT_JOB, f"train.output_dir={run}", *TINY, "tracking.wandb.mode=disabled",
                          *changed, timeout=300)
        assert refused.returncode == 2, refused.stderr[-3000:]
        assert "classes" in refused.stderr or "model.hidden_size: 8 -> 12" in refused.stderr, refused.stderr[-2000:]
        assert tree_hashes(run) == before


def test_two_concurrent_submits_one_is_accepted(cluster, tmp_path, slurm_env, jobs):
    from .slurm_helpers import JOB, job_ids

    run = tmp_path / "run"
    args = [sys.executable, "-m", "lstm_train", "submit", str(JOB), f"train.output_dir={run}", "train.max_steps=5",
            "tracking.wandb.mode=disabled", "slurm.time_min=5", "--executor", "slurm"]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=slurm_env, cwd=ROOT)
             for _ in range(2)]
    outs = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    ids = job_ids(run)
    jobs.extend(ids)
    assert sorted(rc for rc, _, _ in outs) == [0, 2], outs
    refused = next(err for rc, _, err in outs if rc == 2)
    assert len(ids) == 1 and f"belongs to job {ids[0]}" in refused, (ids, refused)
    subprocess.run(["scancel", *ids])


# ---------------------------------------------------------------------------
# Files read back: validated, a clear error naming file and field


@pytest.mark.parametrize("name, content, message", [
    ("result.json", "{not json", "result.json: not valid JSON"),
    ("result.json", '["a list"]', "result.json: expected a JSON object"),
    ("result.json", '{"steps": "many"}', "result.json: field 'steps' should be int"),
    ("config.yaml", "name: [unclosed", "config.yaml: not valid YAML"),
    ("config.yaml", "- a\n- list\n", "config.yaml: expected a mapping"),
])
def test_hand_edited_run_files_are_clear_errors(tmp_path, name, content, message):
    run = tmp_path / "run"
    run.mkdir()
    (run / "result.json").write_text('{"steps": 1}')
    (run / name).write_text(content)
    with pytest.raises(runfiles.RunDirError, match=message.replace("[", r"\[")):
        runfiles.read_json(run / "result.json", runfiles.RESULT_FIELDS)
        runfiles.read_config(run / "config.yaml")


def test_hand_edited_submission_and_result_through_the_cli(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "submission.json").write_text('{"kind": "run", "job_ids": "12345"}')
    status = run_cli("status", str(run))
    assert status.returncode == 2 and "submission.json: field 'job_ids'" in status.stderr, status.stderr[-2000:]
    data = reviews(tmp_path / "r.csv")
    (run / "result.json").write_text("{truncated")
    done = run_cli("run", TEXT_JOB, f"data.path={data}", f"train.output_dir={run}", *TINY,
                   "tracking.wandb.mode=disabled", timeout=300)
    assert done.returncode == 2 and "result.json: not valid JSON" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------------------
# Plain names


@pytest.mark.parametrize("override", ["train.run_id=../../etc", "train.run_id=/tmp/x", "name=..", "train.run_id=a/b"])
def test_run_ids_and_names_are_plain_names(override):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        done = run_cli("run", TEXT_JOB, "data.path=x.csv", override)
    assert done.returncode == 2 and "is not a plain name" in done.stderr, done.stderr[-2000:]
