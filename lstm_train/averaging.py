"""Averaged weights for evaluation: an EMA of the weights, or AWD-LSTM's NT-ASGD average.

Averaged weights generalise better than the last step's (Polyak averaging; Merity et al. 2017's
NT-ASGD for language models), so validation, test and the saved best model use them when
`train.ema` or `train.ntasgd` is set; training itself always steps the raw weights.

The average is updated after every optimizer step from this rank's own weights.  DDP keeps
those identical on every rank, so every rank holds the same average with no communication.
NT-ASGD here switches the *evaluated* weights only (the optimizer goes on as configured):
once validation has not improved for `train.nonmono` evaluations, a uniform running average
starts from the weights of that step.  The average (tensors) and its step count / start step
(JSON) travel with every checkpoint, so a resumed run continues it bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


class WeightAverage:
    """The averaged copy of a module's floating-point parameters."""

    def __init__(self, net: nn.Module, ema: float | None, ntasgd: bool, nonmono: int) -> None:
        self.net, self.decay, self.ntasgd, self.nonmono = net, ema, ntasgd, nonmono
        self.names = [n for n, p in net.named_parameters() if p.is_floating_point()]
        self.count = 0  # steps averaged so far
        self.start: int | None = None  # the step the average began at (NT-ASGD: its switch)
        self.tensors: list[torch.Tensor] | None = None
        if ema is not None:
            self.begin(0)

    @classmethod
    def for_job(cls, net: nn.Module, train: Any) -> WeightAverage | None:
        """The job's average, or None when `train.ema` and `train.ntasgd` are both off."""
        if train.ema is None and not train.ntasgd:
            return None
        return cls(net, train.ema, train.ntasgd, train.nonmono)

    def _params(self) -> list[torch.Tensor]:
        params = dict(self.net.named_parameters())
        return [params[n].detach() for n in self.names]

    @property
    def active(self) -> bool:
        """Whether evaluation uses the average now (NT-ASGD: only once it has switched)."""
        return self.tensors is not None

    @torch.no_grad()
    def begin(self, step: int) -> None:
        """Start averaging at `step` from the current weights."""
        self.tensors = [p.clone() for p in self._params()]
        self.count, self.start = 1, step

    @torch.no_grad()
    def update(self) -> None:
        """Fold in the weights after one optimizer step (foreach ops: a few cheap kernels)."""
        if self.tensors is None:
            return
        self.count += 1
        weight = 1.0 - self.decay if self.decay is not None else 1.0 / self.count  # uniform: the running mean
        torch._foreach_lerp_(self.tensors, self._params(), weight)

    def after_validation(self, step: int, evals_since_best: int) -> bool:
        """NT-ASGD's trigger: validation has not improved for `nonmono` evaluations. True when it switched."""
        if self.ntasgd and self.tensors is None and evals_since_best >= self.nonmono:
            self.begin(step)
            return True
        return False

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """The averaged weights in the module for the duration (raw ones back afterwards, bit for bit)."""
        if self.tensors is None:
            yield
            return
        params = self._params()
        with torch.no_grad():
            raw = [p.clone() for p in params]
            torch._foreach_copy_(params, self.tensors)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(params, raw)

    def describe(self, step: int | None = None) -> str:
        """Which weights an evaluation at `step` used (result.json's "evaluated_weights")."""
        if self.decay is not None:
            return f"ema {self.decay}"
        if self.start is None or (step is not None and step < self.start):
            return "raw (ntasgd not started)" if self.start is None else f"raw (ntasgd from step {self.start})"
        return f"ntasgd from step {self.start}"

    # Checkpoints: the tensors (safetensors) and the counts (JSON meta)

    def state(self) -> tuple[dict[str, torch.Tensor] | None, dict[str, Any]]:
        tensors = None if self.tensors is None else {n: t.detach().to("cpu", copy=True)
                                                     for n, t in zip(self.names, self.tensors)}
        return tensors, {"kind": "ema" if self.decay is not None else "ntasgd", "decay": self.decay,
                         "count": self.count, "start": self.start}

    def load(self, tensors: dict[str, torch.Tensor] | None, meta: dict[str, Any] | None, step: int,
             source: Any) -> None:
        """Continue the checkpoint's average; one without (averaging newly switched on) starts here."""
        if meta is None:
            if self.decay is not None:
                self.begin(step)
            return
        if tensors is None:
            self.tensors, self.count, self.start = None, 0, None
            return
        missing = sorted(set(self.names) - set(tensors))
        if missing:
            raise ValueError(f"{source}: the averaged weights lack {', '.join(missing[:5])}")
        shaped = [n for n, p in zip(self.names, self._params()) if tuple(tensors[n].shape) != tuple(p.shape)]
        if shaped:
            raise ValueError(f"{source}: the averaged weights have another shape than the model's ({', '.join(shaped[:5])})")
        device = self._params()[0].device if self.names else "cpu"
        self.tensors = [tensors[n].to(device=device, dtype=p.dtype) for n, p in zip(self.names, self._params())]
        self.count, self.start = int(meta["count"]), meta["start"]


def digest(average: WeightAverage) -> str | None:
    """sha1 of the averaged tensors: equal on every rank when the ranks averaged the same weights."""
    import hashlib

    if average.tensors is None:
        return None
    sha = hashlib.sha1()
    for name, tensor in zip(average.names, average.tensors):
        sha.update(name.encode())
        sha.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return sha.hexdigest()
