"""The public task API (`lstm_train.task_api`): one import point, torch-free until a torch-bound
name is used; a task's name and sections declared once, in its registration; the validation
split a data section declares by its size, which is how a sweep compares its points."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import Field

from lstm_train.schema import DataBase
from lstm_train.task_api import ModelBase, Registration, SequenceData

try:
    from tests.conftest import ROOT
except ImportError:
    from conftest import ROOT  # type: ignore[no-redef]


def test_one_import_point_that_imports_torch_only_for_the_task_side() -> None:
    probe = ("import sys, lstm_train.task_api as api\n"
             "print('torch' in sys.modules)\n"
             "from lstm_train.task_api import Task, Splits, Ragged, Padded, SequenceModel, PaddedLSTM, LSTMClassifier\n"
             "print('torch' in sys.modules, all(getattr(api, n) is not None for n in api.__all__))\n"
             "import lstm_train.tasks.base as base, lstm_train.data.ragged as ragged\n"
             "print(Task is base.Task and Ragged is ragged.Ragged)\n"
             "try:\n    api.NoSuchThing\nexcept AttributeError as e:\n    print(e)\n")
    said = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert said.returncode == 0, said.stderr[-2000:]
    assert said.stdout.splitlines() == ["False", "True True", "True",
                                        "module 'lstm_train.task_api' has no attribute 'NoSuchThing'"]


class Drawn(SequenceData):
    val_size: int = Field(500, ge=0)


class Shared(DataBase):
    val_fraction: float = Field(0.0, ge=0, lt=1)


class Unsized(DataBase):
    val_size: int = Field(0, ge=0)


class Silent(DataBase):
    train_size: int = 10


def test_a_declared_validation_size_says_how_a_sweep_gets_its_validation_split() -> None:
    assert Drawn().validation() == []  # the task draws 500: nothing to add
    assert Drawn(val_size=0).validation() == ["data.val_size=500"]  # back to the section's own default
    assert Shared().validation() == ["data.val_fraction=0.1"]
    assert Shared(val_fraction=0.2).validation() == []
    assert Unsized().validation() == "data.val_size is 0 (no validation split): set data.val_size to the " \
                                     "validation samples to use"
    said = Silent().validation()
    assert isinstance(said, str) and said.startswith("Silent declares no validation size: give it a `val_size` or "
                                                     "`val_fraction` field")


def test_a_task_declares_its_name_and_sections_once_in_its_registration() -> None:
    from lstm_train.task_api import Task
    from lstm_train.tasks import TASKS, get_task

    for name, reg in TASKS.items():  # the built-ins: the class names its registration, nothing else
        cls = get_task(name)
        assert cls.registration is reg and cls.name == name and (cls.Data, cls.Model) == reg.job_sections()
    reg = Registration("mine", "somewhere:Mine", "tests.test_task_api")

    class Mine(Task):
        registration = reg

    assert (Mine.name, Mine.Data, Mine.Model) == ("mine", Data, Model)
    with pytest.raises(TypeError, match=r"Twice sets name and names a registration: its registration \('mine'\) "
                                        r"declares them; remove them from the class"):
        class Twice(Task):
            registration = reg
            name = "mine"


Data, Model = Drawn, ModelBase  # the sections module of `Mine` above
