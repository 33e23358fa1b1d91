"""Models: the tutorial's LSTM classifier and a reference cell written from its equations."""

from .cell import ReferenceLSTM, ReferenceLSTMCell
from .classifier import LSTMClassifier, LSTMEncoder

__all__ = ["LSTMClassifier", "LSTMEncoder", "ReferenceLSTM", "ReferenceLSTMCell"]
