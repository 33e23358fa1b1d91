"""lstm_train: train LSTMs the same way on a laptop CPU, GPUs and SLURM clusters."""

__version__ = "0.1.0"
