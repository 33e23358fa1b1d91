"""The peer of a language-model job: pytorch/examples' word_language_model as published.

`RNNModel` and the training step are examples/word_language_model's model.py and main.py
(pytorch/examples at 77f55b9, BSD-3-Clause), LSTM flavour, unchanged: an embedding, dropout,
`nn.LSTM` (sequence-first, dropout between layers), dropout, a linear decoder and
`log_softmax` with `NLLLoss`; per window `repackage_hidden`, `model.zero_grad()`, forward,
backward, `clip_grad_norm_(clip)`, then the example's own update (`p.data.add_(p.grad,
alpha=-lr)`, plain SGD) or, with its `--use-optimizer`, `AdamW(lr)`; `loss.item()` every
step; fp32 (the example has no autocast).  Its `evaluate` scores the held-out text the same way.

Only the data feeding is adapted: the example's `Corpus` reads wiki.*.tokens itself; here
`batchify` / `get_batch` cut the job's own token stream (the prepared data every loop of the
bench reads) into the job's `data.global_batch_size` streams and `data.bptt` windows, and
the held-out split (test, or validation where the corpus has none) is scored as the job's
`data.eval_streams` columns.  The example's arguments come from the job: `--emsize`
embedding_size, `--nhid` hidden_size, `--nlayers`, `--dropout`, `--tied` where the example
allows it (emsize == nhid; it refuses otherwise, so a job that ties a narrower embedding
gets the untied model), `--lr`, `--clip` (the example's 0.25 where the job does not clip)
and `--use-optimizer` unless the job's optimizer is SGD.  The models differ where the job's
does more (AWD-LSTM's weight drop, a narrower last layer, an adaptive softmax): the report
gives both parameter counts.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

EXAMPLE_CLIP = 0.25  # main.py's --clip default


class RNNModel(nn.Module):
    """Container module with an encoder, a recurrent module, and a decoder (model.py, LSTM)."""

    def __init__(self, rnn_type: str, ntoken: int, ninp: int, nhid: int, nlayers: int, dropout: float = 0.5,
                 tie_weights: bool = False) -> None:
        super().__init__()
        self.ntoken = ntoken
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = getattr(nn, rnn_type)(ninp, nhid, nlayers, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)
        if tie_weights:
            if nhid != ninp:
                raise ValueError("When using the tied flag, nhid must be equal to emsize")
            self.decoder.weight = self.encoder.weight
        self.init_weights()
        self.rnn_type = rnn_type
        self.nhid = nhid
        self.nlayers = nlayers

    def init_weights(self) -> None:
        initrange = 0.1
        nn.init.uniform_(self.encoder.weight, -initrange, initrange)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -initrange, initrange)

    def forward(self, input: torch.Tensor, hidden: Any) -> tuple[torch.Tensor, Any]:
        emb = self.drop(self.encoder(input))
        output, hidden = self.rnn(emb, hidden)
        output = self.drop(output)
        decoded = self.decoder(output)
        decoded = decoded.view(-1, self.ntoken)
        return F.log_softmax(decoded, dim=1), hidden

    def init_hidden(self, bsz: int) -> tuple[torch.Tensor, torch.Tensor]:
        weight = next(self.parameters())
        return (weight.new_zeros(self.nlayers, bsz, self.nhid), weight.new_zeros(self.nlayers, bsz, self.nhid))


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
    return tuple(repackage_hidden(v) for v in h)


def example_model(job: Any, vocab_size: int) -> RNNModel:
    """The example's model with the job's sizes (tied only where the example can tie)."""
    m = job.model
    tied = bool(m.tie_weights) and m.embedding_size == m.hidden_size
    return RNNModel("LSTM", vocab_size, m.embedding_size, m.hidden_size, m.num_layers, m.dropout, tied)


def example_evaluate(model: RNNModel, data_source: torch.Tensor, bptt: int) -> float:
    """main.py's evaluate(): mean NLL per token over [length, streams] columns, the state carried."""
    model.eval()
    criterion = nn.NLLLoss()
    total_loss = 0.0
    hidden = model.init_hidden(data_source.size(1))
    with torch.no_grad():
        for i in range(0, data_source.size(0) - 1, bptt):
            data, targets = get_batch(data_source, i, bptt)
            output, hidden = model(data, hidden)
            hidden = repackage_hidden(hidden)
            total_loss += len(data) * criterion(output, targets).item()
    return total_loss / (len(data_source) - 1)


def word_lm_epoch(job: Any, task: Any, splits: Any, held_out: Any, device: torch.device, precision: str,
                  max_steps: int | None = None, log=print) -> dict[str, Any]:
    """One epoch (or `max_steps`) of the example's train(), scored on `held_out` (the job's
    [streams, length + 1] view of test, or of validation where the corpus has no test split) by
    its evaluate().  `precision` is lstm_train's; the example trains in fp32 whatever it is."""
    torch.manual_seed(job.train.seed)
    model = example_model(job, splits.info["vocab_size"]).to(device)
    o = job.optim
    lr, clip = o.lr, o.grad_clip or EXAMPLE_CLIP
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr) if o.name != "sgd" else None  # --use-optimizer
    criterion = nn.NLLLoss()
    streams, bptt = job.data.global_batch_size or job.data.batch_size, job.data.bptt
    train_data = batchify(splits.train[0].long().cpu(), streams, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start, start_cpu = time.perf_counter(), time.process_time()
    model.train()
    total_loss, steps, tokens = 0.0, 0, 0
    hidden = model.init_hidden(streams)
    for batch, i in enumerate(range(0, train_data.size(0) - 1, bptt)):
        data, targets = get_batch(train_data, i, bptt)
        if optimizer is not None:
            optimizer.zero_grad()
        else:
            model.zero_grad()
        hidden = repackage_hidden(hidden)
        output, hidden = model(data, hidden)
        loss = criterion(output, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        if optimizer is not None:
            optimizer.step()
        else:
            for p in model.parameters():
                p.data.add_(p.grad, alpha=-lr)
        total_loss += loss.item()
        steps, tokens = steps + 1, tokens + data.numel()
        if batch % 200 == 0:
            log(f"| {batch:5d} batches | loss {total_loss / (batch + 1):5.2f}")
        if max_steps and steps >= max_steps:
            break
    sync()
    epoch_s, cpu_s = time.perf_counter() - start, time.process_time() - start_cpu
    start = time.perf_counter()
    metric = example_evaluate(model, held_out[0].t().long().to(device), bptt)
    return {"steps": steps, "samples": steps * streams, "units": tokens, "epoch_s": epoch_s, "cpu_s": cpu_s,
            "eval_s": time.perf_counter() - start, "metric": metric, "precision": "no",
            "parameters": sum(p.numel() for p in model.parameters())}
