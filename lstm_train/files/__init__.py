"""Run-file handling along its seams: `atomic` (the one writer), `permissions` (who may write a
run directory), `validation` (reading files back that others may have touched), `redaction`
(what of a job may be shared).  `lstm_train.runfiles` re-exports them beside a run's names and ids."""
