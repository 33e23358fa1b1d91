"""Models: the tutorial's LSTM classifier, and one per task (captioner, forecaster, tagger, ...)."""

from .classifier import LSTMClassifier, LSTMEncoder

__all__ = ["LSTMClassifier", "LSTMEncoder"]
