"""The peer of a language-model job: pytorch/examples' word_language_model training loop.

What a user writes without lstm_train (examples/word_language_model/main.py): `batchify`
the token stream into [length, streams] columns, `get_batch` each window of `bptt`,
`repackage_hidden` (detach) the carried state, zero the gradients, forward, loss,
backward, clip, step, `loss.item()` every step into the running total.  The same model
(the job's `LanguageModel`), windows, precision (autocast where the job trains in bf16),
optimizer settings (torch's default implementation, as users write it) and clipping as
the job, so the comparison is of the loops alone.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from .measure import autocast


def batchify(data: torch.Tensor, bsz: int, device: torch.device) -> torch.Tensor:
    nbatch = data.size(0) // bsz
    data = data.narrow(0, 0, nbatch * bsz)
    return data.view(bsz, -1).t().contiguous().to(device)


def get_batch(source: torch.Tensor, i: int, bptt: int) -> tuple[torch.Tensor, torch.Tensor]:
    seq_len = min(bptt, len(source) - 1 - i)
    return source[i : i + seq_len], source[i + 1 : i + 1 + seq_len].reshape(-1)


def repackage_hidden(h: Any) -> Any:
    if isinstance(h, torch.Tensor):
        return h.detach()
    return None if h is None else type(h)(repackage_hidden(v) for v in h)


def word_lm_epoch(job: Any, task: Any, splits: Any, held_out: Any, device: torch.device, precision: str,
                  max_steps: int | None = None, log=print) -> dict[str, Any]:
    """One epoch (or `max_steps`) of the example's loop, scored on `held_out` (test, or validation
    where the corpus has no test split)."""
    torch.manual_seed(job.train.seed)
    model = task.build_model(splits.info).to(device).train()
    o = job.optim
    optimizers = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
    kwargs = {"lr": o.lr, "weight_decay": o.weight_decay}
    if o.name in ("adam", "adamw"):
        kwargs["betas"] = o.betas
    optimizer = optimizers.get(o.name, torch.optim.AdamW)(model.parameters(), **kwargs)
    criterion = nn.CrossEntropyLoss()
    streams, bptt = job.data.global_batch_size or job.data.batch_size, job.data.bptt
    train_data = batchify(splits.train[0].long().cpu(), streams, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start, start_cpu = time.perf_counter(), time.process_time()
    hidden, total_loss, steps, tokens = None, 0.0, 0, 0
    for batch, i in enumerate(range(0, train_data.size(0) - 1, bptt)):
        data, targets = get_batch(train_data, i, bptt)
        hidden = repackage_hidden(hidden)
        model.zero_grad()
        with autocast(device, precision):
            output, hidden = model(data.t(), hidden)  # the job's model is batch-first
            loss = criterion(output.transpose(0, 1).reshape(-1, output.shape[-1]).float(), targets)
        loss.backward()
        if o.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
        optimizer.step()
        total_loss += loss.item()
        steps, tokens = steps + 1, tokens + data.numel()
        if batch % 200 == 0:
            log(f"| {batch:5d} batches | loss {total_loss / (batch + 1):5.2f}")
        if max_steps and steps >= max_steps:
            break
    sync()
    epoch_s, cpu_s = time.perf_counter() - start, time.process_time() - start_cpu
    start = time.perf_counter()
    from .measure import evaluate

    metrics = evaluate(task, model, held_out, device, precision, splits.info, job.data.eval_batch_size)
    return {"steps": steps, "samples": steps * streams, "units": tokens, "epoch_s": epoch_s, "cpu_s": cpu_s,
            "eval_s": time.perf_counter() - start, "metric": metrics[f"test_{task.primary_metric}"]}
