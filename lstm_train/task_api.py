"""The one import point for writing a task, in lstm_train or in a package of your own.

    from lstm_train.task_api import Registration, SequenceData, ModelBase   # torch-free
    from lstm_train.task_api import Task, Splits, Ragged, SequenceModel     # the task itself

Everything a task author needs, and nothing else: what is here is the contract, and what is
not here (the loop, the store, the checkpoint code) may change without notice.  Why a module
of its own and not `lstm_train.tasks`: that package is the registry every command imports
(no torch, so `lstm-train config` checks a job at once) and the home of the built-in tasks;
the public names are gathered here instead, and torch-bound ones are imported on first use
(PEP 562 `__getattr__`), so a registration module or a job-sections module that imports
from here still imports no torch.

* registration (torch-free): `Registration`, `PredictOption` and `ConfigError`;
* job sections (torch-free): `DataBase`, `SequenceData`, `StreamData`, `ModelBase`;
* the task: `Task`, `Splits` (and `Split`), `Batch`, `ExportSignature`, `note`, `predict_texts`,
  `predict_files`, `PredictInputError`;
* the containers batches are cut from: `Ragged` (variable-length sequences) and `Padded` (a
  batch of them);
* sequence models a task may reuse: `SequenceModel` (numeric steps -> classes or a value),
  `PaddedLSTM` (an LSTM padding never changes) with `pool`, `LSTMEncoder` and
  `LSTMClassifier` (fixed-length sequences, the tutorial's model).

`lstm_train.testing.check_task` (or `lstm-train check-task JOB`) checks a task keeps the contract.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .schema import ConfigError, DataBase, ModelBase, SequenceData, StreamData
from .tasks.registry import PredictOption, Registration

if TYPE_CHECKING:
    from .data.ragged import Padded, Ragged
    from .data.splits import Split, Splits
    from .messages import note
    from .models.classifier import LSTMClassifier, LSTMEncoder
    from .models.sequence import PaddedLSTM, pool
    from .models.sequence_model import SequenceModel
    from .tasks.base import Batch, ExportSignature, PredictInputError, Task, predict_files, predict_texts

# Names imported on first use (they import torch): name -> the module that defines it.
_LAZY = {
    "Task": "lstm_train.tasks.base", "Batch": "lstm_train.tasks.base", "ExportSignature": "lstm_train.tasks.base",
    "PredictInputError": "lstm_train.tasks.base", "predict_texts": "lstm_train.tasks.base",
    "predict_files": "lstm_train.tasks.base", "note": "lstm_train.messages",
    "Splits": "lstm_train.data.splits", "Split": "lstm_train.data.splits",
    "Ragged": "lstm_train.data.ragged", "Padded": "lstm_train.data.ragged",
    "SequenceModel": "lstm_train.models.sequence_model", "PaddedLSTM": "lstm_train.models.sequence",
    "pool": "lstm_train.models.sequence", "LSTMEncoder": "lstm_train.models.classifier",
    "LSTMClassifier": "lstm_train.models.classifier",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'lstm_train.task_api' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = ["ConfigError", "DataBase", "ModelBase", "PredictOption", "Registration", "SequenceData", "StreamData",
           *_LAZY]
