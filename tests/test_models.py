"""The math in the docs is the math that runs: the tutorial's six equations == nn.LSTM."""

from __future__ import annotations

import torch
from torch import nn

from lstm_train.models import LSTMClassifier

from .reference_lstm import ReferenceLSTM


def test_reference_cell_equals_nn_lstm_outputs_and_gradients() -> None:
    torch.manual_seed(0)
    lstm = nn.LSTM(28, 64, 1, batch_first=True).double()
    ref = ReferenceLSTM(28, 64).double().copy_from(lstm)
    x = torch.randn(5, 28, 28, dtype=torch.float64)
    x_ref = x.clone().requires_grad_(True)
    x_lstm = x.clone().requires_grad_(True)
    out_ref, (h_ref, c_ref) = ref(x_ref)
    out, (h, c) = lstm(x_lstm)
    for a, b in ((out_ref, out), (h_ref, h), (c_ref, c)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    weights = torch.randn_like(out)
    (out_ref * weights).sum().backward()
    (out * weights).sum().backward()
    torch.testing.assert_close(x_ref.grad, x_lstm.grad, atol=1e-5, rtol=0)
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        torch.testing.assert_close(getattr(ref.cell, name).grad, getattr(lstm, f"{name}_l0").grad, atol=1e-5, rtol=0)


def test_reference_cell_in_float32_too() -> None:
    torch.manual_seed(1)
    lstm = nn.LSTM(28, 64, 1, batch_first=True)
    ref = ReferenceLSTM(28, 64).copy_from(lstm)
    x = torch.rand(8, 28, 28)
    torch.testing.assert_close(ref(x)[0], lstm(x)[0], atol=1e-5, rtol=0)


def test_classifier_is_the_tutorial_model() -> None:
    model = LSTMClassifier(28, 64, 1, 10)
    lstm = model.encoder.lstm
    assert isinstance(lstm, nn.LSTM) and lstm.hidden_size == 64 and lstm.num_layers == 1 and model.fc.in_features == 64
    x = torch.rand(3, 28, 28)
    out, _ = lstm(x)
    torch.testing.assert_close(model(x), model.fc(out[:, -1, :]))
    bi = LSTMClassifier(28, 32, 2, 10, bidirectional=True, dropout=0.1)
    assert bi(x).shape == (3, 10)
