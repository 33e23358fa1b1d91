"""`lstm-train export RUN_DIR --format onnx|torchscript`: a trained model for deployment targets.

Which tasks: those whose prediction is one forward pass over tensors with a fixed signature
(`Task.export_signature`): classify, text_classify, tag and forecast.  Caption and translate
decode token by token (greedy or beam search until an end token, with the encoder's output
re-read at every step): that is a loop over the model's own outputs, not one graph with a
fixed signature; they would need an encoder and a decoder-step export, which is not built.

How: the run's model (the best weights when a model was selected on validation, else the
newest), in fp32 and eval mode -- the loop may have trained under bf16 autocast, but the
exported graph is plain fp32, which every runtime runs.  ONNX uses torch's TorchScript-based
exporter (`dynamo=False`): it maps `nn.LSTM` to ONNX's LSTM operator, so the sequence axis
stays dynamic; the torch.export-based one unrolls the recurrence over the example's length.
TorchScript is `torch.jit.trace`.  The graph is traced on the first two samples of the test
split and checked (onnxruntime, or the reloaded TorchScript module) against the PyTorch model
on the split's first whole batch: a different batch size and, for text, a different length,
so the parity check also shows that the dynamic axes work.  The file is written only when the
parity holds (temporary file, then rename), with a JSON sidecar (`<file>.json`) naming the
inputs, outputs and what reading them needs (classes, tags, the scaler).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from .data.store import prepared
from .files import outputs
from .runfiles import write_atomic
from .tasks.base import ExportSignature, Task

Format = Literal["onnx", "torchscript"]
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}
TRACE_SAMPLES = 2


class ExportParityError(RuntimeError):
    """The exported model's outputs differ from the PyTorch model's by more than the tolerance."""


@dataclass
class ExportResult:
    path: Path
    sidecar: Path
    max_abs_diff: float
    traced_shapes: dict[str, list[int]]
    checked_shapes: dict[str, list[int]]


class Forward(nn.Module):
    """The model with the task's answer as its one output (`ExportSignature.forward`)."""

    def __init__(self, model: nn.Module, forward: Any) -> None:
        super().__init__()
        self.model, self.call = model, forward

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.call(self.model, *inputs) if self.call is not None else self.model(*inputs)


def check_output(out: Path, run_dir: Path, force: bool) -> None:
    """Refuse an output that would destroy something (`files.outputs`): a file of a run's
    checkpoints or a run's own file (always), an existing file or its sidecar (unless --force),
    anything but a plain file at that name."""
    for path in (out, out.with_name(out.name + ".json")):
        outputs.check_output(path, "--out", force)


def export(loaded: tuple[Any, Task, nn.Module, dict[str, Any]], run_dir: Path, fmt: Format, out: Path | None = None,
           tolerance: float = 1e-4, force: bool = False) -> ExportResult:
    """Export `loaded` (`cli.load_run(run_dir)`: job, task, model, task info) as `fmt` to `out`
    (never over a checkpoint; over an existing file only with `force`)."""
    if fmt not in SUFFIX:
        raise ValueError(f"--format {fmt!r}: use onnx or torchscript")
    if not tolerance >= 0:
        raise ValueError(f"--tolerance {tolerance}: a largest accepted difference, 0 or more")
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / f"model{SUFFIX[fmt]}"
    check_output(out, run_dir, force)
    job, task, model, info = loaded
    if type(task).export_signature is Task.export_signature:  # said before any data is read
        task.export_signature(None, info)  # type: ignore[arg-type]  (the base's refusal, naming the exportable tasks)
    model = model.float().cpu().eval()
    test = prepared.load(task).test  # the one data path: the store (mapped, not read again)
    if test is None or len(test[0]) == 0:
        raise ValueError(f"{run_dir}: the run's data has no test split (or an empty one): nothing to check the "
                         "export against")
    n = len(test[0])
    check = task.export_signature(task.batch(test, torch.arange(min(n, job.data.eval_batch_size))), info)
    lengths = task.lengths(test)  # traced on the shortest samples: another batch size and length than the check's
    shortest = torch.argsort(lengths, stable=True)[:TRACE_SAMPLES] if lengths is not None else torch.arange(min(n, TRACE_SAMPLES))
    example = task.export_signature(task.batch(test, shortest), info)
    module = Forward(model, check.forward).eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with torch.no_grad():
            expected = module(*check.inputs.values()).float()
            if fmt == "onnx":
                _to_onnx(module, example, tmp)
                got = _run_onnx(tmp, check)
            else:
                _to_torchscript(module, example, tmp)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still what runtimes take
                    got = torch.jit.load(str(tmp))(*check.inputs.values()).float()
        if got.shape != expected.shape:
            raise ExportParityError(f"exported output shape {tuple(got.shape)} vs PyTorch {tuple(expected.shape)}")
        diff = float((got - expected).abs().max()) if expected.numel() else 0.0
        if not diff <= tolerance:
            raise ExportParityError(f"{fmt} export differs from the PyTorch model by {diff:.3g} on the test split's "
                                    f"first batch (tolerance {tolerance:g}); nothing written")
        write_atomic(out, tmp.read_bytes())  # the one writer: a symlink at `out` is replaced, not followed
    finally:
        tmp.unlink(missing_ok=True)
    shapes = lambda sig: {k: list(v.shape) for k, v in sig.inputs.items()}  # noqa: E731
    sidecar = out.with_name(out.name + ".json")
    _write_json(sidecar, {
        "task": job.task, "format": fmt, "run_dir": str(run_dir.resolve()), "precision": "fp32",
        "inputs": {k: {"dtype": str(v.dtype).removeprefix("torch."), "shape": _axes(v, check.dynamic_axes.get(k, {}))}
                   for k, v in check.inputs.items()},
        "outputs": check.outputs, "metadata": check.metadata,
        "parity": {"max_abs_diff": diff, "batch": shapes(check), "tolerance": tolerance},
    })
    return ExportResult(out, sidecar, diff, shapes(example), shapes(check))


def _axes(tensor: torch.Tensor, dynamic: dict[int, str]) -> list[int | str]:
    return [dynamic.get(i, n) for i, n in enumerate(tensor.shape)]


def _to_onnx(module: nn.Module, sig: ExportSignature, path: Path) -> None:
    with warnings.catch_warnings():
        # The legacy exporter is deprecated in favour of torch.export, which unrolls nn.LSTM over the
        # example's length (see the module docstring); the batch-size warning is about initial states
        # given as constants, and the graph gets none (zeros of the input's batch).
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(sig.inputs.values()), str(path), dynamo=False, opset_version=17,
                          input_names=list(sig.inputs), output_names=sig.outputs,
                          dynamic_axes={**sig.dynamic_axes, **{name: {0: "batch"} for name in sig.outputs}})


def _run_onnx(path: Path, sig: ExportSignature) -> torch.Tensor:
    try:
        import onnxruntime
    except ImportError:
        raise ValueError("onnx export needs onnx and onnxruntime: pip install 'lstm_train[export]'") from None
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: its graph optimiser's notes are not the user's business
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {k: v.numpy() for k, v in sig.inputs.items()})
    return torch.from_numpy(out).float()


def _to_torchscript(module: nn.Module, sig: ExportSignature, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarning (checked by the parity instead), FutureWarning (deprecated)
        traced = torch.jit.trace(module, tuple(sig.inputs.values()), check_trace=False)
    traced.save(str(path))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(data, indent=1) + "\n")
