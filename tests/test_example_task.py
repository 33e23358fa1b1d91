"""The README's "Adding a task" example (docs/examples/adding_task), built from the guide's own
files as a package of its own: installed with pip (its entry point registers it), it keeps the
task contract, `lstm-train config` reads its job without torch, `lstm-train run` trains it, and
the guide's file and line counts are the example's."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lstm_train.config import ConfigError, load_job, validate_job
from lstm_train.testing import Case, check_task

try:
    from tests.conftest import ROOT, result_of, run_cli
except ImportError:
    from conftest import ROOT, result_of, run_cli  # type: ignore[no-redef]

EXAMPLE = ROOT / "docs" / "examples" / "adding_task"
TINY = ["data.train_size=200", "data.val_size=50", "data.test_size=50", "model.hidden_size=8", "train.epochs=1"]


def example_files() -> list[Path]:
    return sorted(p for p in EXAMPLE.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example installed as a user installs a package (pip, from a copy: no build files left
    in the repository), into a folder of its own."""
    where = tmp_path_factory.mktemp("example")
    shutil.copytree(EXAMPLE, where / "src")
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--target", str(where / "site"), str(where / "src")], capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr[-3000:]
    assert (where / "site" / "lstm_train_adding-0.1.0.dist-info" / "entry_points.txt").is_file()
    return where / "site"


@pytest.mark.usefixtures("one_thread")
def test_the_installed_example_keeps_the_task_contract(site: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(site))  # as if installed in the environment: its entry point is found
    (tmp_path / "data").mkdir()
    job = load_job(EXAMPLE / "adding.yaml", [*TINY, f"train.output_dir={tmp_path / 'run'}"])
    assert job.task == "adding"
    check_task(Case(job, ["0.3 0.9* 0.1 0.4*"], {"text": ["0.5* 0.2 0.25*"]}, blank=([], {"text": [" "]}),
                    path=[str(site)], data_dir=tmp_path / "data"), tmp_path / "check")


def test_an_installed_task_is_checked_without_torch_and_trained_by_run(site: Path, tmp_path: Path) -> None:
    env = {"PYTHONPATH": f"{site}:{ROOT}"}
    check = ("import sys; from lstm_train.config import load_job; job = load_job(sys.argv[1]); "
             "print(job.task, job.data.max_length, 'torch' in sys.modules)")
    said = subprocess.run([sys.executable, "-c", check, str(EXAMPLE / "adding.yaml")], capture_output=True, text=True,
                          env={**__import__("os").environ, **env}, timeout=120)
    assert said.returncode == 0 and said.stdout.split() == ["adding", "30", "False"], said.stderr[-2000:]
    bad = run_cli("config", str(EXAMPLE / "adding.yaml"), "data.min_length=40", env=env)
    assert bad.returncode == 2 and "min_length 40 > max_length 30" in bad.stderr
    run = tmp_path / "run"
    trained = run_cli("run", str(EXAMPLE / "adding.yaml"), *TINY, f"train.output_dir={run}", env=env, timeout=300)
    assert trained.returncode == 0, trained.stderr[-3000:]
    result = result_of(run)
    assert result["test_samples"] == 50 and result["primary_metric"] == "test_mse"
    said = run_cli("predict", str(run), "0.3 0.9* 0.1 0.4*", env=env)
    assert said.returncode == 0 and said.stdout.endswith("\t0.3 0.9* 0.1 0.4*\n"), said.stderr[-2000:]
    said = run_cli("predict", str(run), "0.3 0.9* 0.1 0.4*", "--beam", "2", env=env)
    assert said.returncode == 2 and "--beam does not apply to a adding run (its predict options: --text)" in said.stderr
    said = run_cli("predict", str(run), "--help", env=env)  # the run's own task's inputs and options, no other's
    usage = " ".join(said.stdout.split())
    assert said.returncode == 0 and "sequences: numbers separated by spaces, the two to add marked with * (a adding " \
        "run)" in usage and "--text TEXT a sequence: numbers" in usage, said.stdout
    assert not {"--beam", "--csv", "--conllu", "--file", "image files"} & set(re.findall(r"--\w+|image files", usage))


def test_a_task_named_by_reference_or_misnamed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLE))  # on sys.path, not installed: named by package.module:Object
    for ref in ("adding_task:REGISTRATION", "adding_task.task:AddingTask"):
        assert validate_job({"name": "a", "task": ref, "data": {"train_size": 5}}, "j").data.train_size == 5
    with pytest.raises(ConfigError, match=r"j: task = 'adding_task:NOPE': adding_task has no NOPE"):
        validate_job({"task": "adding_task:NOPE"}, "j")
    with pytest.raises(ConfigError, match=r"cannot import no_such_package.tasks \(No module named "
                                          r".no_such_package.\); install its package"):
        validate_job({"task": "no_such_package.tasks:Task"}, "j")
    with pytest.raises(ConfigError, match=r"'sequense' is not a task. Did you mean 'sequence'\?"):
        validate_job({"task": "sequense"}, "j")
    with pytest.raises(ConfigError, match=r"names a dict, not a Registration"):
        validate_job({"task": "adding_task.sections:__dict__"}, "j")


def test_the_guides_counts_are_the_examples() -> None:
    guide = (ROOT / "README.md").read_text().split("### Adding a task", 1)[1].split("\n## ", 1)[0]
    files = example_files()
    lines = sum(len(p.read_text().splitlines()) for p in files)
    stated = re.search(r"\*\*(\d+) files, (\d+) lines\*\*", guide)
    assert stated, "the guide states the example's size as **N files, M lines**"
    assert (int(stated[1]), int(stated[2])) == (len(files), lines)
    for path in files:  # each file the guide lists, with its line count
        rel = path.relative_to(EXAMPLE).as_posix()
        assert re.search(rf"`{re.escape(rel)}` \({len(path.read_text().splitlines())} lines", guide), rel


CHECK = ["task=adding_task:REGISTRATION", *TINY[:-1]]  # the example on PYTHONPATH, not installed
NO_VAL = """from adding_task.task import AddingTask


class NoVal(AddingTask):
    def load_data(self):
        splits = super().load_data()
        splits.val = None  # its data section declares val_size, and yet
        return splits
"""


def test_check_task_passes_the_example_from_outside_and_names_a_breach(tmp_path: Path) -> None:
    env = {"PYTHONPATH": f"{EXAMPLE}:{ROOT}"}  # as an author works: his package's folder on PYTHONPATH
    said = run_cli("check-task", str(EXAMPLE / "adding.yaml"), *CHECK, "--", "0.3 0.9* 0.1 0.4*", "--text",
                   "0.5* 0.1 0.7*", env=env, cwd=tmp_path, timeout=300)
    assert said.returncode == 0, said.stderr[-3000:]
    lines = said.stdout.splitlines()
    assert lines[-1] == "adding: keeps the task contract" and "adding: validation: []" in lines
    assert "adding: predict: 2 line(s), a blank input refused" in lines
    assert not list(tmp_path.iterdir())  # its scratch folder is gone, nothing left here
    (tmp_path / "noval.py").write_text(NO_VAL)
    said = run_cli("check-task", str(EXAMPLE / "adding.yaml"), *CHECK, "task=noval:NoVal", "--", "0.3 0.9*  0.4*",
                   env={"PYTHONPATH": f"{EXAMPLE}:{tmp_path}:{ROOT}"}, cwd=tmp_path, timeout=300)
    assert said.returncode == 1 and said.stdout == ""
    assert said.stderr.strip().endswith("the task breaks the contract: adding: the data section's validation() says "
                                        "the job has a validation split, but load_data gave none (Splits.val)")
    said = run_cli("check-task", str(EXAMPLE / "adding.yaml"), *CHECK, "--", "--beam", "2", env=env, cwd=tmp_path)
    assert said.returncode == 2 and "error: unrecognized arguments: --beam" in said.stderr  # not a adding option


def test_the_example_job_is_swept_on_its_declared_validation_size(monkeypatch: pytest.MonkeyPatch) -> None:
    from lstm_train.config import select_on_validation, sweep_jobs

    monkeypatch.syspath_prepend(str(EXAMPLE))
    spec = {**yaml.safe_load((EXAMPLE / "adding.yaml").read_text()), "task": "adding_task:REGISTRATION",
            "sweep": {"grid": {"optim.lr": [0.01, 0.003, 0.001]}}}
    job = validate_job(spec, "sweep.yaml")
    assert select_on_validation(job, "sweep.yaml") == []  # val_size 1000: the task draws its own
    points = sweep_jobs(job, "sweep.yaml")
    assert [p.optim.lr for _, _, p in points] == [0.01, 0.003, 0.001]
    none = validate_job({**spec, "data": {**spec["data"], "val_size": 0}}, "sweep.yaml")
    assert select_on_validation(none, "sweep.yaml", say=False) == ["data.val_size=1000"]
