"""`lstm-train bench`: lstm_train's loop against the floor, the tutorial and Lightning.

- `run`: the command: every loop on one job side by side, the framework's overhead
  (lstm_train's epoch time over the floor's), `--processes`;
- `floor`: the job's forward, backward and optimizer step with no loop around it;
- `tutorial`: the tutorial's MNIST script as published;
- `word_lm`: pytorch/examples' word_language_model as published (a language model's peer);
- `lightning_loop`: the same job under PyTorch Lightning (optional extra);
- `ours`: lstm_train's loop, in this process or launched as N processes;
- `scaling`: `--scaling`, throughput against sequence length, hidden size, batch size
  and processes, as a table and a PNG;
- `measure`: what they share (batches, units, precision, evaluation, FLOPs).
"""

from .measure import job_flops_per_sample, lstm_flops_per_sample
from .ours import reset_accelerate
from .run import main

__all__ = ["job_flops_per_sample", "lstm_flops_per_sample", "main", "reset_accelerate"]
