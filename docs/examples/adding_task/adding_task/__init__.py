"""The adding problem (Hochreiter & Schmidhuber 1997) as an lstm_train task, in its own package.

This module is the task's registration, the one place its name and job sections are declared;
it imports no torch, so `lstm-train config` checks a job of it at once; lstm_train imports
`task.py` only to train or predict."""

from lstm_train.task_api import PredictOption, Registration

REGISTRATION = Registration(
    name="adding",
    task="adding_task.task:AddingTask",
    sections="adding_task.sections",
    predict_options=(PredictOption("--text", "a sequence: numbers, the two to add marked with *", repeat=True),),
    predict_inputs="sequences: numbers separated by spaces, the two to add marked with *",
)
