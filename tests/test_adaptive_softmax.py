"""The language model's adaptive softmax (issue 38): word-level output at a fraction of a full
softmax's cost, on real runs over small generated Zipf-like word files.

- the words vocabulary is in frequency order at preparation, and only words entries change
  their prepared-data key (chars, bytes and BPE keep theirs);
- `model.output: auto` picks the adaptive softmax only for a large words vocabulary without
  tied weights; tied weights with an explicit adaptive softmax are refused by name;
- the model's per-target log-probabilities are `log_prob`'s, and every cluster gets a gradient
  (DDP needs one for each parameter);
- a real run trains, its validation loss equals a direct computation from `log_prob`, it
  resumes bit-exactly inside an epoch, 1 and 2 processes train the same weights, `generate`
  follows the prompt word by word and `predict` scores a text.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lstm_train import checkpoint, cli
from lstm_train.checkpoint import checkpoint_files
from lstm_train.config import load_job
from lstm_train.data.store import prepared, runner
from lstm_train.data.batching import BatchPlan
from lstm_train.data.streams.language_model import LanguageModelStream
from lstm_train.models.language_model import LanguageModel
from lstm_train.tasks.language_model import LanguageModelTask, auto_cutoffs, output_cutoffs

from .conftest import accelerate_cli, result_of, resume_inside_an_epoch, run_cli

COMMON = "the lord of and to my thou art king shall not go rome her".split()
WORDS = COMMON + [f"w{i}" for i in range(180)]
CUTOFFS = [12, 170]  # head: 12 words; clusters 12-169 and 170- (rare: a rank's batch often has no target there)


def zipf_lines(n: int, seed: int, allowed: set[str] | None = None) -> list[str]:
    """Lines of 3-9 words drawn with probability ~ 1 / rank (Zipf), as words in text are."""
    rng = random.Random(seed)
    pool = [w for w in WORDS if allowed is None or w in allowed]
    weights = [1 / (WORDS.index(w) + 1) for w in pool]
    return [" ".join(rng.choices(pool, weights, k=rng.randint(3, 9))) + "\n" for _ in range(n)]


def word_files(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    train, valid = folder / "train.txt", folder / "valid.txt"
    lines = zipf_lines(500, 0)
    train.write_text("".join(lines))
    seen = {w for line in lines for w in line.split()}
    valid.write_text("".join(zipf_lines(60, 1, seen)))  # no word outside the vocabulary: scored as it is
    return train, valid


def job_args(tmp_path: Path, train: Path, valid: Path, **extra: str) -> list[str]:
    job = tmp_path / "words.yaml"
    job.write_text(f"""name: words_adaptive
task: language_model
data: {{root: {train.parent}, files: {train.name}, val_files: {valid.name}, tokenizer: words, bptt: 16,
        global_batch_size: 8, eval_streams: 1}}
model: {{hidden_size: 24, num_layers: 2, embedding_size: 12, dropout: 0.0, output: adaptive,
         adaptive_cutoffs: {CUTOFFS}}}
optim: {{name: adamw, lr: 0.01, grad_clip: 1.0}}
train: {{epochs: 2, checkpoint_every: 10, log_every: 10, mixed_precision: "no", threads: 1}}
""")
    return [str(job), *(f"{k}={v}" for k, v in extra.items())]


def model_section(**kw: object) -> SimpleNamespace:
    base = {"output": "auto", "adaptive_cutoffs": None, "tie_weights": False, "hidden_size": 512,
            "embedding_size": 128, "num_layers": 2}
    return SimpleNamespace(**{**base, **kw})


# ---------------------------------------------------------------------------
# Choice and configuration


def test_auto_takes_the_adaptive_softmax_only_for_a_large_untied_words_vocabulary() -> None:
    words = {"tokenizer": {"kind": "words"}, "vocab_size": 35_000}
    assert output_cutoffs(model_section(), words) == [2000, 10000]  # 35k x 512 >> the 2 x 512 stack's 3.4M
    assert output_cutoffs(model_section(tie_weights=True), words) is None  # tying is kept
    assert output_cutoffs(model_section(output="full"), words) is None
    for kind, size in (("chars", 65), ("bytes", 256), ("bpe", 32_000)):  # never changed by default
        assert output_cutoffs(model_section(), {"tokenizer": {"kind": kind}, "vocab_size": size}) is None
    assert output_cutoffs(model_section(), {"tokenizer": {"kind": "words"}, "vocab_size": 5000}) is None  # cheap
    assert output_cutoffs(model_section(output="adaptive", adaptive_cutoffs=[5, 9]), words) == [5, 9]
    assert auto_cutoffs(267_735) == [2000, 10000, 50000] and auto_cutoffs(600) == [300]
    with pytest.raises(ValueError, match=r"model.adaptive_cutoffs \[5, 40\]: each must be below the vocabulary "
                                         r"size \(40 tokens\)"):
        output_cutoffs(model_section(output="adaptive", adaptive_cutoffs=[5, 40]),
                       {"tokenizer": {"kind": "words"}, "vocab_size": 40})


def test_tied_weights_with_an_adaptive_softmax_and_bad_cutoffs_are_refused_by_name(tmp_path: Path) -> None:
    train, valid = word_files(tmp_path / "data")
    tied = run_cli("config", *job_args(tmp_path, train, valid, **{"model.tie_weights": "true"}))
    assert tied.returncode == 2 and "model.tie_weights: true cannot go with model.output: adaptive" in tied.stderr
    assert "Traceback" not in tied.stderr
    for cuts, message in (("[60,12]", "model.adaptive_cutoffs [60, 12]: give increasing positive ids"),
                          ("[0,5]", "model.adaptive_cutoffs [0, 5]: give increasing positive ids")):
        proc = run_cli("config", *job_args(tmp_path, train, valid, **{"model.adaptive_cutoffs": cuts}))
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    proc = run_cli("config", *job_args(tmp_path, train, valid, **{"model.output": "full"}))
    assert proc.returncode == 2 and "model.adaptive_cutoffs is set but model.output is 'full'" in proc.stderr
    # auto keeps tying on a words job: a full softmax, said in one line
    out = tmp_path / "tied"
    proc = run_cli("run", *job_args(tmp_path, train, valid, **{"model.output": "auto", "model.adaptive_cutoffs": "null",
                                                            "model.tie_weights": "true", "train.max_steps": "2",
                                                            "model.embedding_size": "24"}),
                   f"train.output_dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "output layer: full softmax over" in proc.stderr and "(auto: tie_weights keeps it)" in proc.stderr


# ---------------------------------------------------------------------------
# The vocabulary and the prepared-data key


def test_the_words_vocabulary_is_in_frequency_order_and_only_words_entries_change_their_key(tmp_path: Path) -> None:
    train, valid = word_files(tmp_path / "data")
    job = load_job(job_args(tmp_path, train, valid)[0], [])
    stream = LanguageModelStream(job.data)
    vocab = stream.plan(runner.scan_unit(stream, stream.pieces()))["vocab"]
    counts: dict[str, int] = {}
    for w in train.read_text().split():
        counts[w] = counts.get(w, 0) + 1
    assert vocab[:2] == ["<eos>", "<unk>"] and vocab[2] == "the"  # rank 1 of the Zipf draw
    assert [counts[w] for w in vocab[2:]] == sorted((counts[w] for w in vocab[2:]), reverse=True)
    assert set(vocab[2:]) == set(counts)

    def keys(tokenizer: str) -> tuple[str, str]:
        """The entry key as made now, and as made before words were reordered (no revision)."""
        task = LanguageModelTask(load_job(job_args(tmp_path, train, valid)[0], [f"data.tokenizer={tokenizer}"]))
        sources = task.source_files()
        key, _ = prepared.entry_key(task, sources, None)
        before = SimpleNamespace(name=task.name, job=task.job)  # a task without entry_revision
        return key, prepared.entry_key(before, sources, None)[0]

    for tokenizer in ("chars", "bytes", "bpe"):
        now, before = keys(tokenizer)
        assert now == before, tokenizer  # their prepared entries keep their names
    now, before = keys("words")
    assert now != before  # an alphabetical words entry is prepared again, never read as frequency-ordered


# ---------------------------------------------------------------------------
# The model


def test_target_log_probabilities_are_log_prob_and_every_cluster_gets_a_gradient() -> None:
    torch.manual_seed(0)
    model = LanguageModel(50, 8, 16, 2, cutoffs=[5, 20])
    tokens = torch.randint(0, 50, (3, 7))
    targets = torch.randint(0, 5, (3, 7))  # head words only: no target in either cluster
    log_probs, _ = model(tokens, targets=targets)
    full, _ = model(tokens)
    assert full.shape == (3, 7, 50)
    torch.testing.assert_close(full.logsumexp(-1), torch.zeros(3, 7), atol=1e-5, rtol=0)  # a distribution
    torch.testing.assert_close(log_probs, full.flatten(0, 1).gather(1, targets.reshape(-1, 1)).squeeze(1))
    (-log_probs.mean()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name  # the clusters too (zero): DDP reduces the same tensors on every rank
    assert all(float(p.grad.abs().max()) == 0 for p in model.adaptive.tail.parameters())
    with pytest.raises(ValueError, match="tie_weights cannot go with an adaptive softmax"):
        LanguageModel(50, 16, 16, 1, tie_weights=True, cutoffs=[5])


# ---------------------------------------------------------------------------
# Real runs


def test_a_words_run_trains_scores_exactly_resumes_generates_and_predicts(tmp_path: Path) -> None:
    train, valid = word_files(tmp_path / "data")
    args = job_args(tmp_path, train, valid)
    train_tokens = sum(len(line.split()) + 1 for line in train.read_text().splitlines())
    steps_per_epoch = BatchPlan(n=train_tokens, global_batch=8, world_size=1, accum=1, seed=1, bptt=16,
                                variable_bptt=False, shuffle=False).steps_in_epoch(0)
    reference, resumed, mid = resume_inside_an_epoch(args, tmp_path, steps_per_epoch)
    assert resumed["resumed_from_step"] == mid and resumed["steps"] == reference["steps"]
    assert resumed["weights_sha1_per_rank"] == reference["weights_sha1_per_rank"]
    assert resumed["val_loss"] == reference["val_loss"]
    run = tmp_path / "reference"

    # trained: well below the uniform guess over the vocabulary
    job, task, model, info = cli.load_run(run)
    assert output_cutoffs(job.model, info) == CUTOFFS and model.adaptive is not None
    assert reference["val_loss"] < math.log(info["vocab_size"]) - 1.0, reference["val_loss"]

    # the validation loss is exact: the same as each target's probability read off log_prob
    vocab = info["tokenizer"]["vocab"]
    index = {w: i for i, w in enumerate(vocab)}
    ids = torch.tensor([index[w] for line in valid.read_text().splitlines() for w in (*line.split(), "<eos>")])
    with torch.no_grad():
        state, total = None, 0.0
        for start in range(0, len(ids) - 1, 50):  # windows of another length than bptt: the state carried
            targets = ids[start + 1:start + 51]
            log_prob, state = model(ids[None, start:start + len(targets)], state)  # [1, T, V]: log_prob's
            total -= float(log_prob[0].gather(1, targets[:, None]).sum())
    assert reference["val_tokens"] == len(ids) - 1
    assert reference["val_loss"] == pytest.approx(total / (len(ids) - 1), rel=1e-5)
    assert reference["val_perplexity"] == pytest.approx(math.exp(total / (len(ids) - 1)), rel=1e-4)

    # generate: the first word is a word of its own after the prompt, every word from the vocabulary
    for prompt in ("the lord", "the lord "):
        proc = run_cli("generate", str(run), "--prompt", prompt, "--tokens", "30", "--seed", "2")
        assert proc.returncode == 0, proc.stderr
        said = proc.stdout[len(prompt):].rstrip("\n")
        assert proc.stdout.startswith(prompt) and said
        assert said[0] in " \n" if prompt == "the lord" else said[0] not in " \n", repr(proc.stdout)
        assert all(w in index for w in proc.stdout.split()), proc.stdout
    again = run_cli("generate", str(run), "--prompt", "the lord ", "--tokens", "30", "--seed", "2")
    assert again.stdout == proc.stdout  # reproducible per seed

    scored = run_cli("predict", str(run), "--file", str(valid))  # the same text, scored whole as one stream
    assert scored.returncode == 0, scored.stderr
    assert f"loss {total / (len(ids) - 1):.4f}" in scored.stdout, scored.stdout


def test_one_and_two_processes_train_the_same_adaptive_weights(tmp_path: Path) -> None:
    """Small batches leave clusters without a target on a rank: DDP still reduces every tensor."""
    train, valid = word_files(tmp_path / "data")
    args = job_args(tmp_path, train, valid, **{"train.max_steps": "12", "data.global_batch_size": "4"})
    one, two = tmp_path / "one", tmp_path / "two"
    proc = run_cli("run", *args, f"train.output_dir={one}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "output layer: adaptive softmax over" in proc.stderr and f"cutoffs {CUTOFFS}" in proc.stderr
    proc = accelerate_cli(2, "run", *args, f"train.output_dir={two}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert result_of(two)["world_size"] == 2 and result_of(one)["steps"] == result_of(two)["steps"] == 12
    a, b = (checkpoint.load(checkpoint_files(d / "checkpoints")[0][1]).model for d in (one, two))
    assert any(k.startswith("adaptive.tail.") for k in a)
    difference = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
    assert difference < 1e-4, difference
