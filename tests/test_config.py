"""Job specs: strict validation with errors that name file, key, value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from lstm_train.config import ConfigError, load_job

from .conftest import ROOT


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


def test_tutorial_job_is_the_tutorial() -> None:
    job = load_job(ROOT / "jobs" / "mnist_lstm.yaml")
    assert (job.data.dataset, job.data.batch_size) == ("mnist", 64)
    assert (job.model.hidden_size, job.model.num_layers, job.model.bidirectional) == (64, 1, False)
    assert (job.optim.name, job.optim.lr, job.train.epochs, job.train.seed) == ("adam", 0.01, 1, 1)
    # auto: bf16 where the CPU/GPU runs it natively (the fast path), exact fp32 with mixed_precision=no
    assert job.train.mixed_precision == "auto" and job.tracking.wandb.mode == "auto"


def test_every_job_file_validates() -> None:
    for path in sorted((ROOT / "jobs").glob("*.yaml")):
        load_job(path)


def test_overrides_are_typed() -> None:
    job = load_job(ROOT / "jobs" / "mnist_lstm.yaml", ["train.epochs=3", "optim.lr=3e-3", "model.bidirectional=true",
                                                      "tracking.wandb.tags=[a, b]"])
    assert job.train.epochs == 3 and job.optim.lr == 0.003 and job.model.bidirectional is True
    assert job.tracking.wandb.tags == ["a", "b"]


def test_unknown_key_suggests_the_close_spelling(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nmodel:\n  hiden_size: 32\n")
    with pytest.raises(ConfigError) as e:
        load_job(path)
    msg = str(e.value)
    assert str(path) in msg and "model.hiden_size" in msg and "model.hidden_size" in msg


def test_unknown_override_names_the_command_line() -> None:
    with pytest.raises(ConfigError, match=r"train\.epoch'.*Did you mean 'train\.epochs'"):
        load_job(ROOT / "jobs" / "mnist_lstm.yaml", ["train.epoch=2"])


def test_bad_value_names_key_value_and_allowed(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\ntrain:\n  mixed_precision: fp8\n")
    with pytest.raises(ConfigError) as e:
        load_job(path)
    msg = str(e.value)
    assert "train.mixed_precision" in msg and "'fp8'" in msg and "'bf16'" in msg


@pytest.mark.parametrize(
    ("override", "key"),
    [("data.batch_size=0", "data.batch_size"), ("data.dataset=cifar", "data.dataset"),
     ("optim.lr=-1", "optim.lr"), ("train.epochs=many", "train.epochs"), ("model.dropout=1.5", "model.dropout")],
)
def test_bad_values(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_job(ROOT / "jobs" / "mnist_lstm.yaml", [override])


def test_bad_task_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Did you mean 'classify'"):
        load_job(write(tmp_path, "name: x\ntask: clasify\n"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_job(write(tmp_path, "name: [x\n"))
    with pytest.raises(ConfigError, match="job file not found"):
        load_job(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not of the form"):
        load_job(ROOT / "jobs" / "mnist_lstm.yaml", ["train.epochs"])


def test_run_dir_is_stable_for_the_same_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same job file and overrides: the same readable directory, in any order, here or under
    SLURM (a new sbatch of a job resumes it; two runs in one salloc do not share one)."""
    for var in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID"):
        monkeypatch.delenv(var, raising=False)
    job = ROOT / "jobs" / "mnist_lstm.yaml"
    a = load_job(job).run_dir
    b = load_job(job, ["optim.lr=0.01"]).run_dir  # the job file's own value: no difference
    c = load_job(job, ["train.epochs=2"]).run_dir
    d = load_job(job, ["optim.lr=0.003", "model.hidden_size=128", "train.log_every=5"]).run_dir
    e = load_job(job, ["model.hidden_size=128", "optim.lr=3e-3", "train.log_every=5"]).run_dir
    assert a == b != c and a.parts[:2] == ("runs", "mnist_lstm") and a.name.startswith("base-")
    assert c.name.startswith("epochs=2-") and d == e and d.name.startswith("hidden=128,lr=0.003-")
    assert d != load_job(job, ["optim.lr=0.003", "model.hidden_size=128"]).run_dir  # the hash sees log_every
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert load_job(job, ["train.epochs=2"]).run_dir == c
    assert load_job(job, ["train.run_id=mine"]).run_dir.name == "mine"


def test_readable_labels_are_short_and_safe() -> None:
    from lstm_train import runnames

    many = {f"model.k{i}": i for i in range(30)}
    shown, _, more = runnames.label(many).rpartition(",+")
    assert len(runnames.label(many)) <= runnames.MAX_LABEL and len(shown.split(",")) + int(more) == 30
    assert runnames.label({"data.path": "/a/b/my data (v2).csv", "data.seed": 1, "train.seed": 2}) == \
        "path=my_data__v2_.csv,data.seed=1,train.seed=2"
    assert runnames.label({}) == runnames.BASE
    assert runnames.label_of("hidden=128,lr=0.003-3f2a9c") == "hidden=128,lr=0.003"
    assert runnames.label_of("3f2a9c01b7") is None and runnames.display_name("j", "base-3f2a9c") == "j"
    long = load_job(ROOT / "jobs" / "mnist_lstm.yaml", [f"data.root=/x/{'y' * 100}"])
    assert len(long.run_id) < 128 and long.run_id.startswith("root=yyyy")


def test_explain_prints_a_keys_description_type_default_and_value() -> None:
    """`config JOB --explain KEY` (issue 36, item 6): from the schema pydantic validates with."""
    from .conftest import run_cli

    one = run_cli("config", "mnist_lstm", "data.val_fraction=0.1", "train.select.metric=loss",
                  "--explain", "train.select.metric")
    assert one.returncode == 0, one.stderr
    assert one.stdout.splitlines()[:4] == ["train.select.metric", "  type:     str | None", "  default:  null (none)",
                                           "  this job: 'loss'"]
    assert "the task's primary metric" in one.stdout and "metrics of this job: loss (min), accuracy (max)" in one.stdout
    section = run_cli("config", "mnist_lstm", "--explain", "train.early_stopping").stdout.splitlines()
    assert [line.split(" ")[0] for line in section] == ["train.early_stopping.patience", "train.early_stopping.min_delta"]
    assert section[1].startswith("train.early_stopping.min_delta (float >= 0; default 0.0): ")
    bounded = run_cli("config", "mnist_lstm", "optim.lr=0.003", "--explain", "optim.lr").stdout
    assert "type:     float > 0" in bounded and "default:  0.01" in bounded and "this job: 0.003" in bounded
    wrong = run_cli("config", "mnist_lstm", "--explain", "trian.ema")
    assert wrong.returncode == 2 and "Did you mean 'train.ema'?" in wrong.stderr and "Traceback" not in wrong.stderr


def test_keys_lists_every_key_of_the_job_with_its_task_sections() -> None:
    """`--keys` (= `--explain` alone): one line per key, every key the job's YAML has, the task's
    data and model keys included; every train.* key has a description and is named in the README."""
    from lstm_train.keys import job_keys
    from lstm_train.runnames import flatten

    from .conftest import run_cli

    for name, task_key in (("mnist_lstm", "data.dataset"), ("shakespeare_char", "data.bptt")):
        listed = run_cli("config", name, "--keys")
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout == run_cli("config", name, "--explain").stdout
        names = {line.split(" ")[0] for line in listed.stdout.splitlines()}
        assert {k.lstrip(".") for k in flatten(load_job(ROOT / "jobs" / f"{name}.yaml").to_dict(), "")} - names == set()
        assert task_key in names
    readme = (ROOT / "README.md").read_text()
    train = [k for k in job_keys(load_job(ROOT / "jobs" / "mnist_lstm.yaml")) if k.name.startswith("train.")]
    assert {"train.ema", "train.ntasgd", "train.compile", "train.grad_accum_steps"} <= {k.name for k in train}
    assert [k.name for k in train if not k.description] == []
    assert [k.name for k in train if f"`{k.name}`" not in readme] == []
    # every key of every shipped job (task sections and sweeps included) says what it is for
    shipped = {k.name for job in sorted((ROOT / "jobs").glob("*.yaml")) for k in job_keys(load_job(job))
               if not k.description}
    assert shipped == set(), f"keys without a description: {sorted(shipped)}"


def test_defaults_compose_job_files_validated_as_one(tmp_path: Path) -> None:
    """`defaults: [base.yaml]` (issue 36, item 4): the bases merged beneath the file in order
    (sections key by key, the file's own keys on top), command-line overrides last, validated as
    one job; the job is named by its own file; a cycle, a missing file or a bad key is named."""
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "common.yaml").write_text("name: common\ntask: classify\noptim:\n  lr: 0.5\n"
                                                      "model:\n  hidden_size: 16\n  num_layers: 2\n")
    (tmp_path / "base.yaml").write_text("defaults: [shared/common.yaml]\ntrain:\n  epochs: 2\n  seed: 7\n"
                                        "model:\n  hidden_size: 32\n")
    child = write(tmp_path, "defaults: [base.yaml]\ntrain:\n  epochs: 3\n")
    job = load_job(child, ["model.dropout=0.1"])
    assert job.name == "job" and job.optim.lr == 0.5 and (job.train.epochs, job.train.seed) == (3, 7)
    assert (job.model.hidden_size, job.model.num_layers, job.model.dropout) == (32, 2, 0.1)
    flat = write(tmp_path / "shared", "name: job\noptim:\n  lr: 0.5\ntrain:\n  epochs: 3\n  seed: 7\n"
                 "model:\n  hidden_size: 32\n  num_layers: 2\n")
    assert load_job(flat, ["model.dropout=0.1"]).to_dict() == job.to_dict()
    assert load_job(flat, ["model.dropout=0.1"]).run_id == job.run_id  # the same training, the same run

    (tmp_path / "base.yaml").write_text("defaults: [job.yaml]\n")
    with pytest.raises(ConfigError, match=r"defaults form a cycle: .*job\.yaml -> .*base\.yaml -> .*job\.yaml"):
        load_job(child)
    (tmp_path / "base.yaml").write_text("defaults: [gone.yaml]\n")
    with pytest.raises(ConfigError, match=r"gone\.yaml: job file not found \(named in the defaults of .*base\.yaml\)"):
        load_job(child)
    (tmp_path / "base.yaml").write_text("defaults: 3\n")
    with pytest.raises(ConfigError, match=r"base\.yaml: defaults = 3: a list of job files"):
        load_job(child)
    (tmp_path / "base.yaml").write_text("model:\n  hiden_size: 3\n")
    with pytest.raises(ConfigError, match=r"job\.yaml \(on defaults .*base\.yaml\): unknown key 'model\.hiden_size'"):
        load_job(child)
