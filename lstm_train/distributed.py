"""One Accelerator for every launcher, and a loud error where processes fail to meet.

`accelerate launch --multi_gpu`, `torchrun` and SLURM tasks all start N
processes with WORLD_SIZE / RANK set.  On a machine without GPUs a plain
`Accelerator()` ignores that and each process trains alone: N silent copies.
Asking for `cpu=True` there makes them one gloo group (MULTI_CPU), and checking
the group's size against what the launcher promised turns any other mismatch
into an error instead of wasted compute.
"""

from __future__ import annotations

import base64
import json
import math
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs

from .schema import ConfigError, DataBase, batch_settings
from .messages import is_main_process
from .tracking import WorkerInfo


# How long a collective waits for a rank that neither answers nor dies (a hung peer, a host
# gone without closing its sockets) before it fails the job.  It must outlast the longest
# legitimate wait: the other ranks at the final barrier while rank 0 writes the result.
# A rank that dies is handled long before this, by its launcher (srun --kill-on-bad-exit,
# torch elastic): see lstm_train/slurm/__init__.py.
COLLECTIVE_TIMEOUT_ENV = "LSTM_TRAIN_COLLECTIVE_TIMEOUT_S"
DEFAULT_COLLECTIVE_TIMEOUT_S = 600


class DistributedSetupError(RuntimeError):
    """The processes of one launch did not form one training group."""


def launched_world_size() -> int:
    """How many processes the launcher says it started (1 when run directly)."""
    if "WORLD_SIZE" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    if "ACCELERATE_USE_CPU" in os.environ and "MASTER_ADDR" in os.environ:  # accelerate's one-process launcher
        raise DistributedSetupError(
            "accelerate launch was asked for several processes (MASTER_ADDR is set) but started this one alone "
            "(no WORLD_SIZE): without --multi_gpu it runs one process, which would train silently alone. Add "
            "--multi_gpu (CPUs too), or leave out --num_processes/--num_machines (and unset MASTER_ADDR) for one.")
    srun_tasks = int(os.environ.get("SLURM_STEP_NUM_TASKS", "1"))
    if srun_tasks > 1:
        raise DistributedSetupError(
            f"started as one of {srun_tasks} srun tasks (SLURM_STEP_NUM_TASKS={srun_tasks}) without "
            "torch.distributed variables (WORLD_SIZE, RANK, MASTER_ADDR): the tasks would train as "
            f"{srun_tasks} unrelated copies. Use `lstm-train submit JOB.yaml`, or run "
            "`accelerate launch` once per node (slurm/accelerate.sbatch)."
        )
    return 1


def make_accelerator(mixed_precision: str = "no", force_cpu: bool = False) -> Accelerator:
    """An Accelerator that trains data-parallel on whatever the launcher started."""
    expected = launched_world_size()
    use_cpu = force_cpu or not torch.cuda.is_available()
    timeout = InitProcessGroupKwargs(timeout=timedelta(seconds=collective_timeout_s()))
    accelerator = Accelerator(cpu=use_cpu, mixed_precision=mixed_precision, kwargs_handlers=[timeout])
    if mixed_precision == "fp16" and accelerator.device.type == "cpu":
        warn_once("train.mixed_precision=fp16 on a CPU: fp16 autocast runs on CUDA only, so this trains in fp32 "
                  "(set train.mixed_precision=no to say so, or bf16 where the CPU has native bf16)")
    if accelerator.num_processes != expected:
        raise DistributedSetupError(
            f"the launcher started {expected} processes (WORLD_SIZE={expected}) but this one joined a "
            f"group of {accelerator.num_processes} ({accelerator.distributed_type}); they would not "
            "share gradients. Check MASTER_ADDR/MASTER_PORT and that every process sees the same devices."
        )
    return accelerator


def collective_timeout_s() -> float:
    """Seconds a collective may wait for a silent peer: $LSTM_TRAIN_COLLECTIVE_TIMEOUT_S or 600."""
    text = os.environ.get(COLLECTIVE_TIMEOUT_ENV, "")
    try:
        value = float(text) if text else DEFAULT_COLLECTIVE_TIMEOUT_S
    except ValueError:
        value = -1
    if value <= 0:
        raise DistributedSetupError(f"{COLLECTIVE_TIMEOUT_ENV}={text!r}: expected a number of seconds > 0")
    return value


# What launchers set for the processes they start: `accelerate launch --mixed_precision` (or
# its config file's `mixed_precision`) and `--num_cpu_threads_per_process`, which the sbatch
# template works out from the node's CPUs; a user may set them by hand too.
PRECISION_ENV = "ACCELERATE_MIXED_PRECISION"
THREADS_ENV = "OMP_NUM_THREADS"
PRECISIONS = ("no", "bf16", "fp16")


def launcher_setting(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def launcher_threads() -> int | None:
    """$OMP_NUM_THREADS as a thread count (its first level: OpenMP allows "4,2")."""
    text = launcher_setting(THREADS_ENV)
    if text is None:
        return None
    try:
        value = int(text.split(",")[0])
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{THREADS_ENV}={text!r}: expected a number of threads >= 1 (or leave it unset)")
    return value


def warn_once(message: str) -> None:
    """One line on the main process of a launch (every rank resolves the same settings)."""
    if is_main_process():
        print(f"warning: {message}", file=sys.stderr, flush=True)


def set_threads(requested: int | None, warn: bool = False) -> int:
    """Threads per process: the job's `train.threads`, else the launcher's ($OMP_NUM_THREADS, as
    `accelerate launch --num_cpu_threads_per_process` and slurm/accelerate.sbatch set it), else one.

    torch defaults to every core in every process.  For LSTMs of this size the
    per-step matrices are too small to split well, and once the cores are
    oversubscribed (two processes, or a neighbour's job on the same node) spinning
    OpenMP threads make a step 10-20x slower: measured 5,100 samples/s with one
    thread against 250 with two while another process was busy on this 2-core machine.
    `warn`: say so (one line) when the job's count overrides a different launcher count.
    """
    launcher = launcher_threads()
    if requested and warn and launcher is not None and launcher != requested:
        warn_once(f"train.threads={requested} (the job) overrides the launcher's {THREADS_ENV}={launcher} "
                  "(accelerate launch --num_cpu_threads_per_process); the job's value is used")
    threads = requested or launcher or 1
    torch.set_num_threads(threads)
    return threads


def worker_info(accelerator: Accelerator) -> WorkerInfo:
    return WorkerInfo(
        rank=accelerator.process_index,
        local_rank=accelerator.local_process_index,
        world_size=accelerator.num_processes,
        device=str(accelerator.device),
    )


def broadcast_buffers(module: torch.nn.Module, world_size: int) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics).

    DDP averages gradients, not buffers: each rank updates its running statistics
    from its own shard, so before evaluating (and at the end) they are made equal,
    or each rank would evaluate, and end with, a slightly different model.
    """
    if world_size > 1:
        for buffer in module.buffers():
            torch.distributed.broadcast(buffer, src=0)


class SparseGradients:
    """Sparse embedding gradients (`nn.Embedding(sparse=True)`: SparseAdam moves only a batch's
    rows) kept out of DDP and all-reduced here, so N processes train what one does.

    DDP would all-reduce them through gloo's sparse path, whose message sizes follow each
    rank's own rows: it corrupted the heap here (SST-2 on 2 processes: `malloc(): unaligned
    tcache chunk detected` in backward after ~5,000 steps; compare pytorch/pytorch#87497).
    Instead each rank scatters its rows into a dense table with one more column marking the
    rows it touched, one dense all-reduce sums them, and the gradient becomes sparse again over
    the union of the ranks' rows, averaged like DDP's: the rows and values a single process
    would have computed for the whole global batch."""

    def __init__(self, params: list[torch.nn.Parameter], world_size: int) -> None:
        self.params, self.world_size = params, world_size

    @classmethod
    def keep_out_of_ddp(cls, module: torch.nn.Module, world_size: int) -> SparseGradients | None:
        """Call before DDP wraps `module`: tells DDP to leave the sparse tables alone and gives
        every rank rank 0's initial tables (DDP broadcasts only what it manages)."""
        names = [f"{name}.weight" if name else "weight" for name, m in module.named_modules()
                 if isinstance(m, torch.nn.Embedding) and m.sparse and m.weight.requires_grad]
        if world_size == 1 or not names:
            return None
        torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, names)
        params = [module.get_parameter(name) for name in names]
        for p in params:
            torch.distributed.broadcast(p.data, src=0)
        return cls(params, world_size)

    def all_reduce(self) -> None:
        """After this rank's backward, before clipping and the optimizer step."""
        for p in self.params:
            table = torch.zeros(p.shape[0], p.shape[1] + 1, dtype=p.dtype, device=p.device)
            if p.grad is not None:
                grad = p.grad.coalesce()
                rows = grad.indices()[0]
                table[rows, :-1] = grad.values()
                table[rows, -1] = 1.0
            torch.distributed.all_reduce(table)
            rows = table[:, -1].nonzero().squeeze(1)
            p.grad = torch.sparse_coo_tensor(rows.unsqueeze(0), table[rows, :-1] / self.world_size, p.shape,
                                             is_coalesced=True)


def gather_objects(accelerator: Accelerator, obj: Any) -> list[Any]:
    """One object from every rank, in rank order (RNG states for the checkpoint, digests).
    Sent as JSON bytes in a uint8 tensor (`to_wire`): torch's object collectives deserialize
    with pickle whatever a peer sends, so a rogue peer could run code; JSON cannot."""
    if accelerator.num_processes == 1:
        return [obj]
    world = accelerator.num_processes
    data, size = _as_tensor(to_wire(obj), accelerator.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    torch.distributed.all_gather(sizes, size)
    longest = max(int(n) for n in sizes)
    padded = torch.zeros(longest, dtype=torch.uint8, device=data.device)
    padded[: data.numel()] = data
    parts = [torch.zeros_like(padded) for _ in range(world)]
    torch.distributed.all_gather(parts, padded)
    return [from_wire(part[: int(n)].cpu().numpy().tobytes()) for part, n in zip(parts, sizes)]


def broadcast_object(accelerator: Accelerator, obj: Any) -> Any:
    """Rank 0's object on every rank: decisions made once, from what rank 0 sees
    (as JSON bytes in a tensor, like `gather_objects`)."""
    if accelerator.num_processes == 1:
        return obj
    data, size = _as_tensor(to_wire(obj) if accelerator.process_index == 0 else b"", accelerator.device)
    torch.distributed.broadcast(size, src=0)
    if accelerator.process_index != 0:
        data = torch.zeros(int(size), dtype=torch.uint8, device=size.device)
    torch.distributed.broadcast(data, src=0)
    return from_wire(data.cpu().numpy().tobytes())


def _as_tensor(data: bytes, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    tensor = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.zeros(0, dtype=torch.uint8)
    return tensor.to(device), torch.tensor([len(data)], dtype=torch.long, device=device)


def to_wire(obj: Any) -> bytes:
    """JSON bytes of what ranks tell each other: JSON values, plus tuples, sets, paths, numpy
    arrays and tensors (tagged, their bytes in base64: RNG states).  Anything else is a
    TypeError here, on the sender, rather than a pickle the receiver would have to trust."""
    return json.dumps(_encode(obj), separators=(",", ":")).encode()


def from_wire(data: bytes) -> Any:
    """The inverse of `to_wire`: only data comes back, never code."""
    return _decode(json.loads(data.decode()))


def _encode(obj: Any) -> Any:
    import numpy as np

    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {"__dict__": {k: _encode(v) for k, v in obj.items()}}
        return {"__items__": [[_encode(k), _encode(v)] for k, v in obj.items()]}
    if isinstance(obj, list):
        return [_encode(v) for v in obj]
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v) for v in obj]}
    if isinstance(obj, (set, frozenset)):
        return {"__set__": [_encode(v) for v in sorted(obj, key=repr)]}
    if isinstance(obj, os.PathLike):
        return {"__path__": os.fspath(obj)}
    if isinstance(obj, torch.Tensor):
        array = obj.detach().cpu()
        return {"__tensor__": base64.b64encode(array.contiguous().view(torch.uint8).numpy().tobytes()).decode(),
                "dtype": str(array.dtype).removeprefix("torch."), "shape": list(array.shape)}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": base64.b64encode(np.ascontiguousarray(obj).tobytes()).decode(),
                "dtype": obj.dtype.str, "shape": list(obj.shape)}
    raise TypeError(f"cannot send a {type(obj).__name__} between ranks (JSON values, tuples, sets, paths, "
                    "arrays and tensors only)")


def _decode(obj: Any) -> Any:
    import numpy as np
    from pathlib import Path

    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__dict__" in obj:
        return {k: _decode(v) for k, v in obj["__dict__"].items()}
    if "__items__" in obj:
        return {_decode(k): _decode(v) for k, v in obj["__items__"]}
    if "__tuple__" in obj:
        return tuple(_decode(v) for v in obj["__tuple__"])
    if "__set__" in obj:
        return {_decode(v) for v in obj["__set__"]}
    if "__path__" in obj:
        return Path(obj["__path__"])
    if "__tensor__" in obj:
        dtype = getattr(torch, obj["dtype"])
        raw = torch.frombuffer(bytearray(base64.b64decode(obj["__tensor__"])), dtype=torch.uint8)
        return (raw.view(dtype) if raw.numel() else torch.zeros(0, dtype=dtype)).reshape(obj["shape"]).clone()
    if "__ndarray__" in obj:
        return np.frombuffer(base64.b64decode(obj["__ndarray__"]), dtype=np.dtype(obj["dtype"])).reshape(obj["shape"]).copy()
    raise ValueError(f"not a message of to_wire: {sorted(obj)[:5]}")


# ---------------------------------------------------------------------------
# Precision


def native_bf16(device: str) -> bool:
    """Whether the hardware multiplies bf16 natively: Ampere+ GPUs; CPUs with AMX or
    AVX512-BF16 (x86) or the BF16 extension (Arm).  Elsewhere bf16 is emulated and slower."""
    if device == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        return False
    return bool({"amx_bf16", "avx512_bf16", "bf16"} & flags)


def _runnable(precision: str, force_cpu: bool, warn: bool) -> str:
    """bf16 asked for on a CPU that has no native bf16 (no AMX, no AVX512-BF16): oneDNN has no
    bf16 LSTM there ("could not create a primitive descriptor"), so the run trains in fp32 and
    says so, instead of failing at its first step."""
    on_cpu = force_cpu or not torch.cuda.is_available()
    if precision == "bf16" and on_cpu and not native_bf16("cpu"):
        if warn:
            warn_once("bf16 asked for, but this CPU has no native bf16 (no AMX or AVX512-BF16 in /proc/cpuinfo), "
                      "where oneDNN cannot run an LSTM in bf16: training in fp32")
        return "no"
    return precision


def resolve_precision(requested: str, task_precision: str = "auto", force_cpu: bool = False,
                      warn: bool = False) -> str:
    """`train.mixed_precision` as the Accelerator takes it.  `auto`: the launcher's precision when
    one was given ($ACCELERATE_MIXED_PRECISION: `accelerate launch --mixed_precision`, its config
    file, or set by hand; accelerate launch always sets it, "no" by default, as a plain
    Accelerator() under it would train); otherwise bf16 where the hardware runs it natively and
    the task does not need fp32 (its `precision` hint), else "no" (fp32).  "no" is exact fp32
    always: the switch for reproducing the tutorial bit for bit.  A job's explicit value wins
    over the launcher's; `warn`: say so in one line when they differ."""
    launcher = launcher_setting(PRECISION_ENV)
    if launcher is not None and launcher.lower() not in PRECISIONS:
        raise ConfigError(f"{PRECISION_ENV}={launcher!r} (from the launcher): lstm_train trains in one of "
                          f"{', '.join(PRECISIONS)}; pass accelerate launch --mixed_precision with one of them")
    launcher = launcher.lower() if launcher else None
    if requested != "auto":
        if warn and launcher is not None and launcher != requested:
            warn_once(f"train.mixed_precision={requested} (the job) overrides the launcher's {PRECISION_ENV}="
                      f"{launcher} (accelerate launch --mixed_precision or its config file); the job's value is used")
        return _runnable(requested, force_cpu, warn)
    if launcher is not None:
        return _runnable(launcher, force_cpu, warn)
    if task_precision == "fp32":
        return "no"
    device = "cuda" if torch.cuda.is_available() and not force_cpu else "cpu"
    return "bf16" if native_bf16(device) else "no"


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The one precision -> autocast mapping, as the loop's Accelerator applies it: bf16 autocast
    for "bf16"; fp16 autocast for "fp16" on CUDA only (Accelerate runs fp16 on a CPU as fp32);
    none for "no".  Evaluation, `finish`, `predict` and the bench all use it, so what they
    decode is what the logged metrics measured."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    enabled = dtype is not None and (device.type == "cuda" or dtype == torch.bfloat16)
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=enabled)


# ---------------------------------------------------------------------------
# Global batch and gradient accumulation


@dataclass(frozen=True)
class BatchLayout:
    """How one optimizer step's samples are spread: `world` processes x `accum` micro-batches of
    `micro` samples make a global batch of `global_batch` samples (with `max_tokens`, `micro` is
    the typical count and the budget decides)."""

    global_batch: int
    micro: int
    accum: int
    world: int
    invariant: bool  # set by data.global_batch_size: the same training at any world size
    max_tokens: int | None = None  # data.max_tokens: a padded-token budget per micro-batch decides instead

    def describe(self) -> str:
        accum = f" x {self.accum} micro-batches" if self.accum > 1 else ""
        if self.max_tokens:
            return (f"global batch up to {self.max_tokens * self.world * self.accum} padded tokens = "
                    f"{self.world} process(es){accum} x {self.max_tokens} (data.max_tokens per process)")
        how = "data.global_batch_size" if self.invariant else "data.batch_size per process"
        return f"global batch {self.global_batch} = {self.world} process(es){accum} x {self.micro} ({how})"


def batch_layout(data: DataBase, grad_accum_steps: int | None, world: int) -> BatchLayout:
    """Per-process micro-batch and accumulation from the data section and the world size.

    Without `data.global_batch_size` the batch is per process (`data.batch_size` x
    `train.grad_accum_steps`), so the global batch grows with the world.  With it, each
    process takes global / world samples per step, in `train.grad_accum_steps`
    micro-batches, or in as few as keep each one within `data.batch_size`."""
    s = batch_settings(data)
    if s.global_batch_size is None:
        accum = grad_accum_steps or 1
        return BatchLayout(s.batch_size * accum * world, s.batch_size, accum, world, False, s.max_tokens)
    if s.max_tokens:
        raise ConfigError("data.global_batch_size counts samples but data.max_tokens is set: a token budget "
                          "decides the batches; unset one of them")
    g = s.global_batch_size
    if g % world:
        raise ConfigError(f"data.global_batch_size = {g} does not divide over {world} processes; use a multiple "
                          f"of {world} (e.g. {math.ceil(g / world) * world})")
    per_process = g // world
    if grad_accum_steps is not None:
        if per_process % grad_accum_steps:
            raise ConfigError(f"data.global_batch_size = {g} over {world} process(es) is {per_process} samples each, "
                              f"which train.grad_accum_steps = {grad_accum_steps} does not divide")
        accum = grad_accum_steps
    else:
        accum = next(a for a in range(math.ceil(per_process / s.batch_size), per_process + 1) if per_process % a == 0)
    return BatchLayout(g, per_process // accum, accum, world, True)
