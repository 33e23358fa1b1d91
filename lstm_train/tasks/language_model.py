"""Language modelling (char-rnn, AWD-LSTM): predict the next token of a text.

Training runs over contiguous streams with truncated backpropagation through time: the
batch plan (`data.batching`, stream mode) hands each rank its streams' next window of
`data.bptt` tokens, and the hidden state is carried from one window to the next through
`Task.step_loss`, detached; the loop resets it at every epoch and keeps it in checkpoints.
Validation and test text are cut into `data.eval_streams` streams scored whole, window
after window with the state carried (as AWD-LSTM and pytorch/examples score).

The output layer is a full softmax or torch's adaptive softmax (`model.output`, chosen by
`output_cutoffs`): with the adaptive one the loss and the evaluation read each target's exact
log-probability (no [B, T, V] logits), and sampling reads the whole distribution (`log_prob`).

The training split is the flat token column itself (position i's target is token i + 1);
a batch is the windows the plan's position matrix names.  Evaluation splits are views
[streams, length + 1] of their flat columns (no copy).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.batching import check_streams
from ..data.streams.language_model import LanguageModelStream, WORDS_ORDER, encode_file, resolve_files, text_lines
from ..data.lm_tokenizer import CorpusError, Tokenizer
from ..files.outputs import write_run_output
from ..files.validation import RunDirError, read_run_bytes
from ..messages import note
from ..models.language_model import LanguageModel
from .base import Batch, PredictInputError, Split, Splits, Task, predict_texts, spread
from .registry import BUILTIN_TASKS


def stream_view(tokens: torch.Tensor, streams: int) -> torch.Tensor:
    """[streams, length + 1] rows of a flat column, each overlapping the next by one token (a view)."""
    streams = max(1, min(streams, len(tokens) - 1))
    length = (len(tokens) - 1) // streams
    return tokens.as_strided((streams, length + 1), (length, 1))


def unpack(carry: dict[str, torch.Tensor], layers: int) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    return [(carry[f"h{i}"], carry[f"c{i}"]) for i in range(layers)] if carry else None


def pack(state: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    out = {}
    for i, (h, c) in enumerate(state):
        out[f"h{i}"], out[f"c{i}"] = h.detach(), c.detach()
    return out


class LanguageModelTask(Task):
    registration = BUILTIN_TASKS["language_model"]
    primary_metric = "loss"
    higher_is_better = False
    throughput_unit = "tokens"

    # -- data and model ---------------------------------------------------------------

    def stream_data(self) -> LanguageModelStream:
        """The corpus in pieces, tokenized in two passes on every core (`data/streams/language_model.py`)."""
        return LanguageModelStream(self.job.data)

    def entry_revision(self) -> dict[str, Any]:
        """Words vocabularies became frequency-ordered (the adaptive softmax's head): words entries
        only; chars, bytes and BPE entries keep their names."""
        return {"words_order": WORDS_ORDER} if self.job.data.tokenizer == "words" else {}

    def view(self, splits: Splits) -> Splits:
        """The mapped flat columns as the loop reads them: training stays flat (position i's target
        is token i + 1), validation and test become [streams, length + 1] views (no copy).  Without
        a test split there is no test evaluation: the result says so instead of repeating validation."""
        data = self.job.data
        train, val = splits.train[0], splits.val[0] if splits.val else None
        for name, column in (("training", train), ("validation", val)):
            if column is None or len(column) < 2:
                raise CorpusError(f"the {name} part of data.files has fewer than 2 tokens: a language model needs "
                                  "text to predict (give more text, or change data.val_fraction / data.val_files)")
        check_streams(len(train), data.global_batch_size or data.batch_size, data.bptt)  # before the run dir exists
        test = splits.test[0] if splits.test else None
        test_view = (stream_view(test, data.eval_streams),) if test is not None and len(test) > 1 else None
        return Splits(train=(train,), val=(stream_view(val, data.eval_streams),), test=test_view, info=splits.info)

    def source_files(self) -> list[Path]:
        """The corpus files: the prepared-data store tokenizes them once, every rank maps the
        flat token column (and the evaluation streams) read-only."""
        data, root = self.job.data, Path(self.job.data.root)
        files = resolve_files(data.files, root, "files")
        for key in ("val_files", "test_files"):
            if getattr(data, key):
                files += resolve_files(getattr(data, key), root, key)
        return files

    def run_files(self, info: dict[str, Any]) -> dict[str, bytes]:
        """The trained subword model (tokenizer: bpe), for users' own tools."""
        bpe = info["tokenizer"].get("bpe_json")
        return {"tokenizer.json": bpe.encode("utf-8")} if bpe else {}

    def build_model(self, info: dict[str, Any]) -> nn.Module:
        m = self.job.model
        cutoffs = output_cutoffs(m, info)
        return LanguageModel(info["vocab_size"], m.embedding_size, m.hidden_size, m.num_layers, m.dropout,
                             m.tie_weights, m.weight_drop, m.locked_dropout, m.input_dropout, m.embed_dropout,
                             cutoffs)

    def init_weights(self, model: nn.Module, info: dict[str, Any]) -> None:
        """Weights as built; a words job (or one that chose its output layer) is told which output layer it got."""
        m = self.job.model
        if info["tokenizer"]["kind"] == "words" or m.output != "auto":
            note(describe_output(m, info))

    def lengths(self, split: Split) -> torch.Tensor | None:
        return None

    def tokens(self, split: Split) -> torch.Tensor:
        """One token per position (an expanded view: no memory per token)."""
        return torch.ones(1, dtype=torch.int64).expand(len(split[0]))

    def batch(self, split: Split, indices: torch.Tensor) -> Batch:
        """(inputs, targets) [B, T]: a training window (a position matrix from the plan) or whole
        evaluation streams (row indices of the view)."""
        tokens = split[0]
        if indices.dim() == 2:
            positions = torch.cat([indices, indices[:, -1:] + 1], 1).to(tokens.device)
            rows = tokens[positions].long()
        else:
            rows = tokens.index_select(0, indices.to(tokens.device)).long()
        return rows[:, :-1], rows[:, 1:]

    def read_labelled(self, files: list[Path], info: dict[str, Any]) -> Split:
        """Plain text files for `evaluate` (loss, bits per token, perplexity of a new text): read one
        after the other as one text, tokenized as the run's corpus was (`streams.language_model.encode_file`, the
        same blocks and encoder), cut into `data.eval_streams` streams as its test split: the run's
        test text written as a file scores exactly its test metrics."""
        ids = np.concatenate([encode_file(path, info["tokenizer"]) for path in files])
        if len(ids) < 2:
            raise CorpusError(f"{files[0]}: {len(ids)} token(s); a language model scores at least 2")
        return (stream_view(torch.from_numpy(ids), self.job.data.eval_streams),)

    # -- training and evaluation ---------------------------------------------------------

    def step_loss(self, model: nn.Module, batch: Batch, carry: dict[str, torch.Tensor], info: dict[str, Any]
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        inputs, targets = batch
        m = self.job.model
        if output_cutoffs(m, info):  # adaptive softmax: the targets' log-probabilities, no [B, T, V] logits
            log_probs, state, dropped, raw = model(inputs, unpack(carry, m.num_layers), outputs=True, targets=targets)
            loss = -log_probs.mean()
        else:
            logits, state, dropped, raw = model(inputs, unpack(carry, m.num_layers), outputs=True)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        if m.ar:
            loss = loss + m.ar * dropped.float().pow(2).mean()
        if m.tar:
            loss = loss + m.tar * (raw[:, 1:] - raw[:, :-1]).float().pow(2).mean()
        if self.job.data.variable_bptt:  # AWD-LSTM scales the learning rate by window / bptt
            loss = loss * (inputs.shape[1] / self.job.data.bptt)
        return loss, pack(state)

    def loss(self, model: nn.Module, batch: Batch, info: dict[str, Any]) -> torch.Tensor:
        return self.step_loss(model, batch, {}, info)[0]

    def eval_sums(self, model: nn.Module, batch: Batch, info: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Whole streams, window after window, the state carried."""
        inputs, targets = batch
        total = torch.zeros((), dtype=torch.float64, device=inputs.device)
        state = None
        adaptive = bool(output_cutoffs(self.job.model, info))
        for start in range(0, inputs.shape[1], self.job.data.bptt):
            window = slice(start, start + self.job.data.bptt)
            if adaptive:  # exact: log p(target) from the head and the target's cluster
                log_probs, state = model(inputs[:, window], state, targets=targets[:, window])
                total -= log_probs.sum()
                continue
            logits, state = model(inputs[:, window], state)
            total += F.cross_entropy(logits.flatten(0, 1).float(), targets[:, window].flatten(), reduction="sum")
        return {"loss_sum": total, "count": torch.tensor(targets.numel(), device=inputs.device)}

    def eval_pieces(self, split: Split, batches: list[torch.Tensor]) -> Iterator[tuple[Split, list[torch.Tensor], float]]:
        """One window of `data.bptt` tokens of every stream at a time (the streams are one batch, too
        coarse to sample), spread over the streams' length: what `eval_sums` runs window after window."""
        view, bptt = split[0], self.job.data.bptt
        length = view.shape[1] - 1
        starts = range(0, length, bptt)
        for i in spread(len(starts)):
            start = starts[i]
            yield (view[:, start : start + bptt + 1],), batches, min(bptt, length - start) / length

    def metrics(self, sums: dict[str, float], info: dict[str, Any], prefix: str = "test_") -> dict[str, float]:
        loss = sums["loss_sum"] / max(sums["count"], 1)
        out = {f"{prefix}loss": loss, f"{prefix}bits_per_token": loss / math.log(2),
               f"{prefix}perplexity": math.exp(min(loss, 700)), f"{prefix}tokens": int(sums["count"])}
        if self.job.data.tokenizer in ("chars", "bytes"):
            out[f"{prefix}bpc"] = out[f"{prefix}bits_per_token"]
        return out

    # -- after training ------------------------------------------------------------------

    def evaluation_tables(self, model: nn.Module, info: dict[str, Any], step: int, run_dir: Path
                          ) -> dict[str, dict[str, Any]]:
        """A 200-token sample at every evaluation (temperature 0.8, top-k 40, seed 1): appended to
        samples.txt and logged as the W&B table `samples` (step, prompt, text)."""
        tokenizer = Tokenizer.from_info(info["tokenizer"])
        prompt = "\n" if tokenizer.kind != "chars" or "\n" in (tokenizer.vocab or []) else tokenizer.vocab[0]
        text = self._sample_text(model, tokenizer, prompt, 200, 1)
        _append_sample(run_dir / "samples.txt", f"--- step {step}, temperature 0.8, top-k 40", prompt + text)
        return {"samples": {"columns": ["step", "prompt", "text"], "rows": [[step, prompt, prompt + text]]}}

    @staticmethod
    def _sample_text(model: nn.Module, tokenizer: Tokenizer, prompt: str, tokens: int, seed: int) -> str:
        was_training = model.training
        try:
            return "".join(generate(model, tokenizer, prompt, tokens, 0.8, 40, seed))
        finally:
            model.train(was_training)

    def finish(self, model: nn.Module, splits: Splits, run_dir: Path) -> dict[str, Any]:
        """Three samples of the best model (temperature 0.8, top-k 40) after the evaluations' ones in
        samples.txt, and a W&B table."""
        tokenizer = Tokenizer.from_info(splits.info["tokenizer"])
        prompt = tokenizer.decode([int(splits.val[0][0, 0])])
        rows = []
        for seed in (1, 2, 3):
            rows.append([seed, prompt, prompt + self._sample_text(model, tokenizer, prompt, 300, seed)])
        for seed, _, text in rows:
            _append_sample(run_dir / "samples.txt", f"--- final (best weights), seed {seed}, temperature 0.8, "
                           "top-k 40", text)
        return {"samples_file": str(run_dir / "samples.txt"),
                "tables": {"samples": {"columns": ["seed", "prompt", "text"], "rows": rows}}}

    def predict(self, model: nn.Module, info: dict[str, Any], inputs: list[str], options: dict[str, Any]) -> list[str]:
        """Score a text: `predict RUN_DIR --file F` (or --text): loss, bits per token, perplexity.
        --file is scored whole, as one text, but read and scored a group of lines at a time
        (`textio.utf8_lines`: a line over 64 MiB is refused once that much is read), so that its
        size never decides the memory taken."""
        tokenizer = Tokenizer.from_info(info["tokenizer"])
        texts: list[tuple[str, Iterable[np.ndarray]]] = []  # arguments and --text as every text task takes them
        if inputs or options.get("text"):
            texts += [(f"text {i + 1}", [tokenizer.encode(t, f"text {i + 1}")])
                      for i, t in enumerate(predict_texts(inputs, {"text": options.get("text")}))]
        if options.get("file"):
            texts.append((options["file"], tokenizer.encode_lines(text_lines(Path(options["file"])), options["file"])))
        if not texts:
            raise PredictInputError("give a text to score: lstm-train predict RUN_DIR TEXT, --text T or --file F")
        lines = []
        for name, chunks in texts:
            m = self.metrics(self.score(model, chunks, name), info, prefix="")
            lines.append(f"{name}\tloss {m['loss']:.4f}\tbits/token {m['bits_per_token']:.4f}\t"
                         f"perplexity {m['perplexity']:.3f}\ttokens {m['tokens']}")
        return lines

    def score(self, model: nn.Module, chunks: Iterable[np.ndarray], name: str) -> dict[str, float]:
        """Loss sums of one text arriving as id chunks, scored as `eval_sums` scores a stream (windows
        of data.bptt tokens, the state carried, the same windows whatever the chunks), holding at
        most a chunk and a window."""
        bptt, state, sums = self.job.data.bptt, None, {"loss_sum": 0.0, "count": 0}
        pending = np.zeros(0, dtype=np.int64)

        def window(ids: np.ndarray) -> None:
            nonlocal state
            tokens = torch.from_numpy(ids)[None]
            logits, state = model(tokens[:, :-1], state)
            sums["loss_sum"] += float(F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten(),
                                                      reduction="sum"))
            sums["count"] += len(ids) - 1

        with torch.no_grad(), self.autocast(torch.device("cpu")):
            for chunk in chunks:
                pending = np.concatenate([pending, chunk])
                while len(pending) > bptt:  # a whole window: bptt inputs and their targets
                    window(pending[: bptt + 1])
                    pending = pending[bptt:]
            if len(pending) >= 2:
                window(pending)
        if not sums["count"]:
            raise ValueError(f"{name}: needs at least 2 tokens to score, has {len(pending)}")
        return sums


AUTO_SHORTLIST = 2000  # the head's words: Zipf text's most frequent 2,000 words are most of its tokens
AUTO_GROWTH = 5  # each cluster 5x the last (AWD-LSTM's WikiText-103 splits: 2,800 / 20,000 / 76,000)


def auto_cutoffs(vocab_size: int) -> list[int]:
    """2,000, then x5 while below half the vocabulary (so the last cluster is never a sliver):
    35k words -> [2000, 10000], 267k (WikiText-103) -> [2000, 10000, 50000]; a vocabulary under
    4,000 gets one cluster at its middle."""
    cuts, cut = [], AUTO_SHORTLIST
    while cut < vocab_size / 2:
        cuts.append(cut)
        cut *= AUTO_GROWTH
    return cuts or [max(1, vocab_size // 2)]


def lstm_macs(m: Any) -> int:
    """Multiply-adds per token of the LSTM stack (4 gates x (input + hidden) x hidden per layer)."""
    sizes = [m.embedding_size] + [m.hidden_size] * (m.num_layers - 1) + [m.embedding_size if m.tie_weights
                                                                            else m.hidden_size]
    return sum(4 * sizes[i + 1] * (sizes[i] + sizes[i + 1]) for i in range(m.num_layers))


def output_cutoffs(m: Any, info: dict[str, Any]) -> list[int] | None:
    """The adaptive softmax's cutoffs, or None for a full softmax.  `auto` takes the adaptive one
    where it pays and is allowed: a words vocabulary (frequency-ordered ids; BPE and characters
    stay full, bit for bit as before), no tie_weights (tying is a quality choice a job makes on
    purpose), and a full softmax that would cost more multiply-adds per token than the whole
    LSTM stack (vocabulary x last layer > the stack's; 35k words on 2 x 512 is 5x it)."""
    vocab = info["vocab_size"]
    if m.output == "full" or (m.output == "auto" and (info["tokenizer"]["kind"] != "words" or m.tie_weights or
                                                       vocab * m.hidden_size <= lstm_macs(m))):
        return None
    cuts = m.adaptive_cutoffs or auto_cutoffs(vocab)
    if cuts[-1] >= vocab:
        raise ValueError(f"model.adaptive_cutoffs {cuts}: each must be below the vocabulary size ({vocab:,} tokens)")
    return list(cuts)


def describe_output(m: Any, info: dict[str, Any]) -> str:
    """One line: which output layer, and why where `auto` chose it."""
    cuts, vocab, macs = output_cutoffs(m, info), info["vocab_size"], lstm_macs(m)
    width = m.embedding_size if m.tie_weights else m.hidden_size
    why = ""
    if m.output == "auto":
        cost = f"a full softmax costs {vocab * width / 1e6:.1f}M multiply-adds per token, the LSTM stack {macs / 1e6:.1f}M"
        why = (" (auto: tie_weights keeps it)" if m.tie_weights and info["tokenizer"]["kind"] == "words" else
               f" (auto: {cost})")
    if cuts:
        return (f"output layer: adaptive softmax over {vocab:,} tokens, head {cuts[0]:,} + {len(cuts)} cluster(s), "
                f"cutoffs {cuts}{why}")
    return f"output layer: full softmax over {vocab:,} tokens{why}"


def _append_sample(path: Path, heading: str, text: str) -> None:
    """samples.txt grows by one sample (rewritten whole through the run-output gate: it is small).
    The earlier samples are read as a run's files are, never through a symlink: one planted there
    is replaced, and what it points to is neither read nor written."""
    try:
        before = read_run_bytes(path).decode("utf-8", errors="replace")
    except (FileNotFoundError, RunDirError):
        before = ""
    write_run_output(path.parent, path.name, f"{before}{heading}\n{text}\n")


MAX_SAMPLES = 10_000  # --samples' bound: each is a sample read by a person
MAX_TOKENS = 100_000  # --tokens' bound: a sample is read, not stored; 100k tokens is a book chapter


def generate(model: nn.Module, tokenizer: Tokenizer, prompt: str, tokens: int, temperature: float, top_k: int | None,
             seed: int, top_p: float | None = None) -> Iterator[str]:
    """Sample `tokens` tokens after `prompt`, yielding text as it comes (reproducible per seed).
    `top_p` (nucleus sampling, Holtzman et al. 2019): draw from the fewest likeliest tokens whose
    probabilities add up to `top_p`, so the long tail of rare tokens (a character model's `&`, `$`,
    `3`), which a fixed `top_k` of a small vocabulary barely trims, is never drawn.
    Bad options and a prompt outside the vocabulary are refused here, before anything is sampled."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"--temperature {temperature}: must be a finite number > 0 (1 samples the model as it is, "
                         "lower is greedier)")
    if not 1 <= tokens <= MAX_TOKENS:
        raise ValueError(f"--tokens {tokens}: must be between 1 and {MAX_TOKENS}")
    if not 0 <= seed < 2**63:
        raise ValueError(f"--seed {seed}: must be between 0 and 2**63 - 1")
    if top_k is not None and top_k < 1:
        raise ValueError(f"--top-k {top_k}: must be >= 1 (or left out to sample from the whole vocabulary)")
    if top_p is not None and not (math.isfinite(top_p) and 0 < top_p <= 1):
        raise ValueError(f"--top-p {top_p}: must be > 0 and <= 1 (e.g. 0.95; 1 or left out keeps every token)")
    if not prompt:
        raise ValueError("--prompt is empty: give at least one character to start from")
    ids = tokenizer.encode(prompt, f"--prompt {prompt!r}").tolist()
    if tokenizer.kind == "words" and ids and ids[-1] == tokenizer.vocab.index("<eos>"):
        ids = ids[:-1] or ids
    return _sample(model, tokenizer, ids, tokens, temperature, top_k, seed, joined=prompt[-1].isspace(), top_p=top_p)


def _sample(model: nn.Module, tokenizer: Tokenizer, ids: list[int], tokens: int, temperature: float,
            top_k: int | None, seed: int, joined: bool = True, top_p: float | None = None) -> Iterator[str]:
    """`joined`: the text before the first sampled token ends in white space (a words model
    then starts its first word without one)."""
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    out: list[int] = []
    start = 0  # out[start:] is not shown yet (an unfinished UTF-8 character, at most a few tokens)
    with torch.no_grad():
        logits, state = model(torch.tensor([ids]), None)
        for _ in range(tokens):
            last = logits[0, -1].float() / temperature
            if top_k is not None and top_k < len(last):
                cutoff = torch.topk(last, top_k).values[-1]
                last = last.masked_fill(last < cutoff, float("-inf"))
            probs = last.softmax(0)
            if top_p is not None and top_p < 1:
                sorted_probs, order = probs.sort(descending=True)
                outside = sorted_probs.cumsum(0) - sorted_probs >= top_p  # the likeliest token always stays
                probs = probs.index_fill(0, order[outside], 0.0)
            token = int(torch.multinomial(probs, 1, generator=generator))
            out.append(token)
            piece = _piece(tokenizer, out, start, joined=joined)
            if piece is not None:
                yield piece
                start = len(out)
            logits, state = model(torch.tensor([[token]]), state)
    if start < len(out):
        yield _piece(tokenizer, out, start, final=True, joined=joined) or ""


def _piece(tokenizer: Tokenizer, out: list[int], start: int, final: bool = False, joined: bool = True) -> str | None:
    """The text of out[start:], decoded with one token of context before it, so each token is
    decoded a bounded number of times (linear in the output, not quadratic); None while it ends
    in an unfinished UTF-8 character (unless `final`, or after 8 tokens: not text, shown as is).
    Words are joined by spaces, <eos> is a new line, as `Tokenizer.decode` does; the first word
    follows the prompt with a space unless the prompt ended in one (`joined`)."""
    if tokenizer.kind == "words":
        eos = tokenizer.vocab.index("<eos>")
        return "".join("\n" if t == eos else ("" if (i == 0 and joined) or (i and out[i - 1] == eos) else " ")
                       + tokenizer.vocab[t]
                       for i, t in enumerate(out[start:], start))
    context = out[max(start - 1, 0):start]
    before, text = tokenizer.decode(context), tokenizer.decode(context + out[start:])
    if text.endswith("\ufffd") and not final and len(out) - start < 8:
        return None
    return text[len(before):] if text.startswith(before) else text


def cmd_generate(model: nn.Module, info: dict[str, Any], args: Any) -> None:
    """`lstm-train generate`: stream each sample to stdout."""
    if not 1 <= args.samples <= MAX_SAMPLES:
        raise ValueError(f"--samples {args.samples}: must be between 1 and {MAX_SAMPLES}")
    if args.seed + args.samples - 1 > 2**63 - 1:
        raise ValueError(f"--seed {args.seed} with --samples {args.samples}: the last seed passes 2**63 - 1")
    tokenizer = Tokenizer.from_info(info["tokenizer"])
    options = {"top_p": args.top_p}
    generate(model, tokenizer, args.prompt, args.tokens, args.temperature, args.top_k, args.seed, **options)  # checks
    try:
        for n in range(args.samples):
            if args.samples > 1:
                print(f"--- sample {n + 1} (seed {args.seed + n})", flush=True)
            sys.stdout.write(args.prompt)
            for piece in generate(model, tokenizer, args.prompt, args.tokens, args.temperature, args.top_k,
                                  args.seed + n, **options):
                sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n")
        sys.stdout.flush()
    except BrokenPipeError:  # `generate ... | head`: the reader has what it wanted; end quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout at exit


TASK = LanguageModelTask
