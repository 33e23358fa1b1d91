"""The language model: streams and carried state, on small generated corpora.

- the stream plan: every input token of an epoch read once over all ranks, the same windows
  at 1 and 2 ranks (and with accumulation), AWD-LSTM's variable windows reproducible;
- the carried hidden state: window after window equals the whole stream at once (fp32);
- a run killed mid-epoch resumes bit-exactly (carried state in the checkpoint); 1 and 2
  processes end with the same weights;
- sampling is reproducible; `predict --file` scores a text;
- bad input: a corpus too short for its streams, an empty file, bytes that are not UTF-8, a
  prompt outside the vocabulary, bad sampling options, a resume with another bptt, stream
  count or vocabulary.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lstm_train import checkpoint
from lstm_train.checkpoint import checkpoint_files
from lstm_train.data.store import prepared
from lstm_train.config import load_job
from lstm_train.data.batching import BatchPlan
from lstm_train.tasks.language_model import LanguageModelTask, generate
from lstm_train.data.lm_tokenizer import Tokenizer

from .conftest import ROOT, accelerate_cli, result_of, resume_inside_an_epoch, run_cli

WORDS = "the king shall not go to rome and her lord my thou art".split()


def corpus(path: Path, lines: int = 600, seed: int = 0) -> Path:
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) + "\n" for _ in range(lines)))
    return path


def job_file(tmp_path: Path, text: Path, **extra: str) -> list[str]:
    job = tmp_path / "lm.yaml"
    job.write_text(f"""name: lm_test
task: language_model
data: {{root: {text.parent}, files: {text.name}, bptt: 16, global_batch_size: 8}}
model: {{hidden_size: 24, num_layers: 2, embedding_size: 12, dropout: 0.0}}
optim: {{name: adamw, lr: 0.01, grad_clip: 1.0}}
train: {{epochs: 2, checkpoint_every: 10, log_every: 10, mixed_precision: "no", threads: 1}}
""")
    return [str(job), *(f"{k}={v}" for k, v in extra.items())]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    (_, path), *_ = checkpoint_files(run_dir / "checkpoints")
    return checkpoint.load(path).model


# ---------------------------------------------------------------------------
# The plan


def plan(world: int = 1, accum: int = 1, n: int = 1000, streams: int = 8, bptt: int = 16, variable: bool = False,
         seed: int = 1) -> BatchPlan:
    return BatchPlan(n=n, global_batch=streams, world_size=world, accum=accum, seed=seed, bptt=bptt,
                     variable_bptt=variable, shuffle=False)


@pytest.mark.parametrize("variable", [False, True])
def test_every_token_of_an_epoch_is_read_once_and_ranks_own_contiguous_streams(variable: bool) -> None:
    one = plan(variable=variable)
    seen = torch.cat([idx.flatten() for micro in one.steps(0, 0) for idx in micro])
    assert sorted(seen.tolist()) == list(range(8 * one.stream_length))  # every input position once
    assert one.steps_in_epoch(0) == len(list(one.steps(0, 0)))
    for world, accum in ((2, 1), (1, 2), (2, 2), (4, 1)):
        other = plan(world, accum, variable=variable)
        for step, whole in enumerate(one.steps(0, 0)):
            parts = [torch.cat(list(other.steps(0, r, step).__next__())) for r in range(world)]
            assert torch.equal(torch.cat(parts), whole[0])  # same windows; rank r: streams r*S/W .. (r+1)*S/W-1
            streams = [p[:, 0] // other.stream_length for p in parts]
            assert [s.tolist() for s in streams] == [list(range(r * 8 // world, (r + 1) * 8 // world))
                                                    for r in range(world)]
    with pytest.raises(ValueError, match="cannot be shared evenly"):
        plan(world=3)


def test_variable_windows_are_reproducible_and_awd_like() -> None:
    a, b = plan(n=20_000, bptt=40, variable=True), plan(n=20_000, bptt=40, variable=True)
    assert a.windows(0) == b.windows(0) and a.windows(1) == b.windows(1)
    assert a.windows(0) != a.windows(1) and a.windows(0) != plan(n=20_000, bptt=40, variable=True, seed=2).windows(0)
    sizes = [s for _, s in a.windows(0)]
    assert sum(sizes) == a.stream_length and min(sizes[:-1]) >= 5 and max(sizes) <= 60
    assert len(set(sizes)) > 5 and any(s < 30 for s in sizes)  # N(base, 5), and half windows sometimes


def test_resume_at_another_stream_count_is_refused() -> None:
    with pytest.raises(ValueError, match="trained on 16 streams, this launch has 8"):
        plan().check_resume(16, "step-10.pt")


# ---------------------------------------------------------------------------
# The model and its carried state


def task_for(tmp_path: Path, **extra: str) -> LanguageModelTask:
    text = corpus(tmp_path / "data" / "c.txt")
    job = load_job(job_file(tmp_path, text)[0], [f"{k}={v}" for k, v in extra.items()])
    return LanguageModelTask(job)


@pytest.mark.usefixtures("one_thread")
def test_carried_state_equals_the_whole_stream_at_once(tmp_path: Path) -> None:
    task = task_for(tmp_path, **{"model.weight_drop": "0.5", "model.locked_dropout": "true", "model.dropout": "0.3",
                                 "model.embed_dropout": "0.1"})
    splits = prepared.load(task)
    torch.manual_seed(0)
    model = task.build_model(splits.info).eval()  # no dropout of any kind in eval
    p = BatchPlan(n=len(splits.train[0]), global_batch=8, bptt=16, shuffle=False)
    carry, total, count = {}, 0.0, 0
    with torch.no_grad():
        for (micro,) in p.steps(0, 0):
            loss, carry = task.step_loss(model, task.batch(splits.train, micro), carry, splits.info)
            assert all(not v.requires_grad for v in carry.values())  # carried detached
            total, count = total + float(loss) * micro.numel(), count + micro.numel()
        whole = task.batch(splits.train, torch.arange(8)[:, None] * p.stream_length + torch.arange(p.stream_length))
        once = float(task.step_loss(model, whole, {}, splits.info)[0])
    assert abs(total / count - once) < 1e-5, (total / count, once)
    # and evaluation scores whole streams the same way
    with torch.no_grad():
        sums = task.eval_sums(model, task.batch((splits.train[0].as_strided((8, p.stream_length + 1),
                                                                            (p.stream_length, 1)),), torch.arange(8)), splits.info)
    assert abs(float(sums["loss_sum"]) / int(sums["count"]) - once) < 1e-5


@pytest.mark.usefixtures("one_thread")
def test_weight_drop_trains_through_the_fused_lstm(tmp_path: Path) -> None:
    """DropConnect reaches the weight the fused call uses (outputs change with the mask, the
    raw weight gets the gradient) and nothing is left replaced after the call."""
    task = task_for(tmp_path, **{"model.weight_drop": "0.5"})
    splits = prepared.load(task)
    model = task.build_model(splits.info).train()
    batch = task.batch(splits.train, torch.arange(4)[:, None] * 100 + torch.arange(16))
    torch.manual_seed(1)
    a = model(batch[0])[0]
    torch.manual_seed(2)
    b = model(batch[0])[0]
    assert not torch.allclose(a, b)
    b.sum().backward()
    assert model.layers[0].weight_hh_l0.grad is not None and model.layers[0].weight_hh_l0.grad.abs().sum() > 0
    assert isinstance(model.layers[0].weight_hh_l0, torch.nn.Parameter)
    model.eval()
    assert torch.equal(model(batch[0])[0], model(batch[0])[0])


# ---------------------------------------------------------------------------
# Runs


def test_training_resumes_bit_exactly_inside_an_epoch_and_samples_reproducibly(tmp_path: Path) -> None:
    text = corpus(tmp_path / "data" / "c.txt")
    args = job_file(tmp_path, text, **{"model.dropout": "0.2", "data.variable_bptt": "true"})
    steps_per_epoch = plan(n=len(text.read_text()) * 9 // 10, variable=True).steps_in_epoch(0)  # the first 90% train
    reference, resumed, mid = resume_inside_an_epoch(args, tmp_path, steps_per_epoch)
    assert resumed["resumed_from_step"] == mid and resumed["steps"] == reference["steps"]
    assert resumed["weights_sha1_per_rank"] == reference["weights_sha1_per_rank"]
    assert reference["val_loss"] < 2.0 and reference["val_bpc"] == pytest.approx(reference["val_loss"] / 0.6931, 1e-3)
    run = tmp_path / "reference"
    samples = (run / "samples.txt").read_text()
    assert samples.count("--- final (best weights), seed") == 3 and samples.count("--- step ") >= 2  # every evaluation

    one = run_cli("generate", str(run), "--prompt", "the ", "--tokens", "60", "--seed", "3", "--top-k", "5")
    two = run_cli("generate", str(run), "--prompt", "the ", "--tokens", "60", "--seed", "3", "--top-k", "5")
    other = run_cli("generate", str(run), "--prompt", "the ", "--tokens", "60", "--seed", "4", "--top-k", "5")
    assert one.returncode == 0, one.stderr
    assert one.stdout == two.stdout != other.stdout and one.stdout.startswith("the ") and len(one.stdout) == 61 + 4
    several = run_cli("generate", str(run), "--prompt", "the ", "--tokens", "20", "--samples", "2")
    assert several.returncode == 0 and several.stdout.count("--- sample") == 2

    scored = run_cli("predict", str(run), "--file", str(text))
    assert scored.returncode == 0, scored.stderr
    assert "bits/token" in scored.stdout and "perplexity" in scored.stdout
    streamed_scores_equal_whole(run, text)
    big = tmp_path / "one-line.txt"
    with open(big, "wb") as f:  # 100 MB without a line break (sparse): refused once 64 MiB are read
        f.truncate(100 << 20)
    refused = run_cli("predict", str(run), "--file", str(big))
    assert refused.returncode == 2 and "one-line.txt:1: a line of more than 64 MiB without a line break" in \
        refused.stderr and "Traceback" not in refused.stderr, refused.stderr[-2000:]

    for bad, message in ((["--prompt", "ROMEO"], "'E', 'M', 'O', 'R'"), (["--temperature", "0"], "a finite number > 0"),
                         (["--top-k", "0"], "must be >= 1"), (["--tokens", "0"], "--tokens 0: must be between"),
                         (["--top-p", "2"], "--top-p 2.0: must be > 0 and <= 1")):
        proc = run_cli("generate", str(run), *bad)
        assert proc.returncode == 2 and message in proc.stderr and proc.stdout == "", proc.stderr
    # `| head`: the reader closes the pipe; generate ends quietly (issue 27)
    piped = subprocess.run(["bash", "-o", "pipefail", "-c", f"{sys.executable} -m lstm_train generate {run} "
                            "--tokens 100000 | head -c 5"], capture_output=True, text=True, cwd=ROOT, timeout=120,
                           env={**os.environ, "WANDB_MODE": "disabled"})
    assert piped.returncode == 0 and len(piped.stdout) == 5 and "Traceback" not in piped.stderr, piped.stderr


def streamed_scores_equal_whole(run: Path, text: Path) -> None:
    """`predict --file` reads and scores a file a group of lines at a time: the same loss as the
    whole text scored in one pass (`eval_sums`, what predict did before), however small the groups."""
    from lstm_train.cli import load_run
    from lstm_train.data import lm_tokenizer
    from lstm_train.data.streams.language_model import text_lines

    job, task, model, info = load_run(run)
    tokenizer = lm_tokenizer.Tokenizer.from_info(info["tokenizer"])
    ids = torch.from_numpy(tokenizer.encode(text.read_text()))
    with torch.no_grad(), task.autocast(torch.device("cpu")):
        whole = {k: float(v) for k, v in task.eval_sums(model, (ids[None, :-1], ids[None, 1:]), info).items()}
    for group in (37, 1 << 20):  # odd-sized groups that cut windows anywhere; one group
        before, lm_tokenizer.ENCODE_GROUP_CHARS = lm_tokenizer.ENCODE_GROUP_CHARS, group
        try:
            streamed = task.score(model, tokenizer.encode_lines(text_lines(text)), str(text))
        finally:
            lm_tokenizer.ENCODE_GROUP_CHARS = before
        assert streamed["count"] == whole["count"] == len(ids) - 1
        assert streamed["loss_sum"] == pytest.approx(whole["loss_sum"], rel=1e-6)


def test_one_and_two_processes_train_the_same_weights(tmp_path: Path) -> None:
    text = corpus(tmp_path / "data" / "c.txt")
    args = job_file(tmp_path, text, **{"train.max_steps": "20", "data.batch_size": "4"})
    one, two = tmp_path / "one", tmp_path / "two"
    proc = run_cli("run", *args, "data.batch_size=8", f"train.output_dir={one}")
    assert proc.returncode == 0, proc.stderr
    proc = accelerate_cli(2, "run", *args, f"train.output_dir={two}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert result_of(two)["world_size"] == 2 and result_of(one)["steps"] == result_of(two)["steps"] == 20
    a, b = weights(one), weights(two)
    difference = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
    print(f"max |weight difference| 1 vs 2 processes after 20 steps: {difference:.2e}")
    assert difference < 1e-4
    assert abs(result_of(one)["val_loss"] - result_of(two)["val_loss"]) < 1e-4


# ---------------------------------------------------------------------------
# Bad input


def test_bad_corpora_are_clear_errors(tmp_path: Path) -> None:
    short = tmp_path / "data" / "short.txt"
    short.parent.mkdir(parents=True)
    short.write_text("the king shall go\n" * 5)
    proc = run_cli("run", *job_file(tmp_path, short), f"train.output_dir={tmp_path / 'r1'}")
    assert proc.returncode == 2 and "it must have at least 129 tokens" in proc.stderr, proc.stderr
    empty = tmp_path / "data" / "empty.txt"
    empty.write_text("")
    proc = run_cli("run", *job_file(tmp_path, empty), f"train.output_dir={tmp_path / 'r2'}")
    assert proc.returncode == 2 and f"{empty}: the file is empty" in proc.stderr, proc.stderr
    latin = tmp_path / "data" / "latin.txt"
    latin.write_bytes(("the king\n" * 50).encode() + "caf\u00e9\n".encode("latin-1"))
    proc = run_cli("run", *job_file(tmp_path, latin), f"train.output_dir={tmp_path / 'r3'}")
    assert proc.returncode == 2 and f"{latin}:51: not UTF-8 text (byte 0xe9 at offset 453)" in proc.stderr, proc.stderr
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r3").exists()  # bad data leaves no run directory


def test_resuming_with_another_bptt_stream_count_or_vocabulary_is_refused(tmp_path: Path) -> None:
    text = corpus(tmp_path / "data" / "c.txt")
    args = job_file(tmp_path, text, **{"train.max_steps": "10"})
    out = tmp_path / "run"
    assert run_cli("run", *args, f"train.output_dir={out}").returncode == 0
    (out / "result.json").unlink()  # unfinished: its checkpoint is what remains

    def digest() -> str:
        return hashlib.sha1(b"".join(p.read_bytes() for p in sorted((out / "checkpoints").rglob("*")) if p.is_file())
                            ).hexdigest()

    before = digest()
    for change, message in ((["data.bptt=8"], "task info differs in bptt"),
                            (["data.global_batch_size=4"], "trained on 8 streams, this launch has 4"),
                            (["data.tokenizer=bytes"], "task info differs in tokenizer")):
        proc = run_cli("run", *args, "train.max_steps=20", *change, f"train.output_dir={out}")
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr and digest() == before


@pytest.mark.usefixtures("one_thread")
def test_sampling_is_reproducible_and_checks_its_options(tmp_path: Path) -> None:
    task = task_for(tmp_path)
    splits = prepared.load(task)
    torch.manual_seed(0)
    model = task.build_model(splits.info)
    tok = Tokenizer.from_info(splits.info["tokenizer"])
    a = "".join(generate(model, tok, "the", 50, 0.8, 5, seed=1))
    assert a == "".join(generate(model, tok, "the", 50, 0.8, 5, seed=1)) != "".join(generate(model, tok, "the", 50, 0.8,
                                                                                              5, seed=2))
    with pytest.raises(ValueError, match="outside the model's vocabulary of 18: 'Q', 'Z'"):
        generate(model, tok, "QZ", 5, 1.0, None, 1)
    with pytest.raises(ValueError, match="--temperature -1"):
        generate(model, tok, "the", 5, -1, None, 1)
    with pytest.raises(ValueError, match="--top-k 0"):
        generate(model, tok, "the", 5, 1.0, 0, 1)
    # nucleus sampling: a tiny top_p keeps the likeliest token only (greedy, so every seed agrees);
    # top_p 1 changes nothing; a top_p outside (0, 1] is refused
    greedy = "".join(generate(model, tok, "the", 50, 0.8, None, seed=1, top_p=1e-9))
    assert greedy == "".join(generate(model, tok, "the", 50, 0.8, None, seed=7, top_p=1e-9)) != a
    assert "".join(generate(model, tok, "the", 50, 0.8, 5, seed=1, top_p=1.0)) == a
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match=f"--top-p {bad}: must be > 0 and <= 1"):
            generate(model, tok, "the", 5, 1.0, None, 1, top_p=bad)


def test_a_time_limit_ends_the_run_as_finished(tmp_path: Path) -> None:
    text = corpus(tmp_path / "data" / "c.txt")
    out = tmp_path / "run"
    proc = run_cli("run", *job_file(tmp_path, text, **{"train.epochs": "1000", "train.max_seconds": "2",
                                                       "train.log_every": "5"}), f"train.output_dir={out}")
    assert proc.returncode == 0, proc.stderr
    result = result_of(out)
    assert result["stopped_at_time_limit"] and 0 < result["steps"] < 1000 * 36
    # no test split (test_fraction 0): validation metrics only, and said so (nothing copied into test_*)
    assert "val_loss" in result and "test_loss" not in result and result["test_split"].startswith("none")
    assert result["primary_metric"] == "val_loss"
    assert 1 <= result["train_seconds"] < 30  # it ends at the last step that leaves room for the final validation


def test_wikitext2_layout_with_the_awd_regularisers(tmp_path: Path) -> None:
    """jobs/wikitext2_awd_lstm.yaml on generated wiki.{train,valid,test}.tokens: words with <eos>,
    variable windows, weight drop, locked and embedding dropout, AR/TAR, tied weights."""
    root = tmp_path / "wikitext-2"
    for name, lines, seed in (("train", 400, 0), ("valid", 60, 1), ("test", 60, 2)):
        corpus(root / f"wiki.{name}.tokens", lines, seed)
    out = tmp_path / "run"
    proc = run_cli("run", str(ROOT / "jobs" / "wikitext2_awd_lstm.yaml"), f"data.root={root}", "data.bptt=10",
                   "data.global_batch_size=4", "data.batch_size=4", "data.eval_streams=2", "model.hidden_size=32",
                   "model.embedding_size=16", "train.epochs=4", "optim.lr=5", "train.threads=1", "model.dropout=0.1",
                   "model.input_dropout=0.1", "model.weight_drop=0.2",
                   f"train.output_dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = result_of(out)
    assert result["val_perplexity"] < 14 and result["test_tokens"] > 0 and "val_bpc" not in result  # 13 words + <eos>
    proc = run_cli("generate", str(out), "--prompt", "the king", "--tokens", "10")
    assert proc.returncode == 0 and proc.stdout.startswith("the king"), proc.stderr


def test_own_files_with_a_bpe_tokenizer_trained_on_the_training_part(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run_cli("run", str(ROOT / "jobs" / "lm_files_example.yaml"), f"data.root={ROOT}", "train.max_steps=6",
                   "model.hidden_size=32", "model.embedding_size=16", "data.vocab_size=300",
                   f"train.output_dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "tokenizer.json").is_file() and result_of(out)["val_tokens"] > 0
    proc = run_cli("generate", str(out), "--prompt", "The loop", "--tokens", "20", "--seed", "2")
    assert proc.returncode == 0 and proc.stdout.startswith("The loop"), proc.stderr
