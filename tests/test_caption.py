"""Image to text: digit strips, the captioning model, its metrics, a real run and predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lstm_train.config import ConfigError, load_job
from lstm_train.data.strips import (
    BOS, DIGIT, EOS, PAD, VOCAB_SIZE, make_strips, save_png, text_to_tokens, tokens_to_digits,
)
from lstm_train.models.captioner import Captioner
from lstm_train.tasks.caption import load_strip
from lstm_train.tasks.caption_text import cer, edit_distance

from .conftest import ROOT, accelerate_cli, run_cli, write_idx

JOB = str(ROOT / "jobs" / "mnist_caption.yaml")
# A model small enough for tests to train in seconds.
TINY = [
    "model.channels=[8,16,16]", "model.hidden_size=32", "model.encoder_hidden=16", "model.embed_size=8",
    "data.num_train=512", "data.num_test=64", "data.batch_size=32", "data.eval_batch_size=64",
    "train.threads=1", "tracking.wandb.mode=disabled",
]


pytestmark = pytest.mark.usefixtures("one_thread")


def fake_digits(n: int, value: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Digit images whose only non-zero pixel value is `value` (a marker of their split)."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, DIGIT, DIGIT), np.uint8)
    for i in range(n):
        r, c = rng.integers(2, 20, 2)
        images[i, r : r + 6, c : c + 6] = value
    return images, rng.integers(0, 10, n).astype(np.uint8)


def write_fake_mnist(root: Path) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, value, n in (("train", 100, 300), ("t10k", 201, 120)):
        images, labels = fake_digits(n, value, seed=value)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


# ---------------------------------------------------------------------------
# Strips


def test_strips_are_deterministic_and_consistent() -> None:
    digits = torch.randint(0, 256, (50, DIGIT, DIGIT), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    labels = torch.arange(50) % 10
    a = make_strips(digits, labels, 200, max_digits=4, seed=3)
    b = make_strips(digits, labels, 200, max_digits=4, seed=3)
    c = make_strips(digits, labels, 200, max_digits=4, seed=4)
    for x, y in ((a.images, b.images), (a.tokens, b.tokens), (a.sources, b.sources)):
        assert torch.equal(x, y)
    assert not torch.equal(a.images, c.images)
    assert a.images.dtype == torch.uint8 and a.images.shape == (200, 32, 4 * DIGIT + 3 * 4 + 4)
    assert a.tokens.shape == (200, 6) and a.tokens.dtype == torch.int64
    assert set(a.lengths.tolist()) == {1, 2, 3, 4}
    for i in range(200):
        n = int(a.lengths[i])
        row = a.tokens[i].tolist()
        assert row[0] == BOS and row[n + 1] == EOS and all(t == PAD for t in row[n + 2 :])
        assert tokens_to_digits(row) == [int(labels[s]) for s in a.sources[i, :n]]
        assert (a.sources[i, n:] == -1).all()


def test_strip_pixels_come_from_their_digits() -> None:
    """Each strip is exactly its source digits pasted with max: nothing else is drawn."""
    digits, labels = fake_digits(40, 255, seed=1)
    digits, labels = torch.from_numpy(digits), torch.from_numpy(labels)
    s = make_strips(digits, labels, 50, max_digits=3, seed=0, min_gap=0, max_gap=6)
    for i in range(50):
        n = int(s.lengths[i])
        assert int(s.images[i].sum()) == sum(int(digits[j].sum()) for j in s.sources[i, :n])  # no overlap (gap>=0)


def test_train_and_test_digits_never_mix(tmp_path: Path) -> None:
    """Train strips only carry train digits' pixel marker (100), test strips only test's (201)."""
    root = write_fake_mnist(tmp_path / "data")
    job = load_job(JOB, [f"data.root={root}", "data.num_train=400", "data.num_test=300", "data.max_digits=3"])
    from lstm_train.tasks.caption import CaptionTask

    task = CaptionTask(job)
    splits = task.load_data()
    assert set(splits.train[0].unique().tolist()) == {0, 100}
    assert set(splits.test[0].unique().tolist()) == {0, 201}
    assert splits.train[0].shape == (400, 32, 3 * DIGIT + 2 * 4 + 4)
    again = task.load_data()
    assert torch.equal(again.train[0], splits.train[0]) and torch.equal(again.test[1], splits.test[1])
    assert task.strips(train=True).sources.max() < 300 and task.strips(train=False).sources.max() < 120


def test_data_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="width 100 cannot hold 5 digits"):
        load_job(JOB, ["data.width=100"])
    with pytest.raises(ConfigError, match="min_digits 3 > max_digits 2"):
        load_job(JOB, ["data.max_digits=2", "data.min_digits=3"])
    with pytest.raises(ConfigError, match="unknown key 'data.max_digit'"):
        load_job(JOB, ["data.max_digit=2"])


def test_text_tokens_roundtrip() -> None:
    row = text_to_tokens("4 0 9", 5)
    assert row.tolist() == [BOS, 7, 3, 12, EOS, PAD, PAD]
    assert tokens_to_digits(row) == [4, 0, 9]
    assert tokens_to_digits([BOS, 5, EOS, 6]) == [2]


# ---------------------------------------------------------------------------
# Edit distance


def test_edit_distance_hand_checked() -> None:
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("flaw", "lawn") == 2
    assert edit_distance("intention", "execution") == 5
    assert edit_distance("", "abc") == 3 and edit_distance("abc", "") == 3
    assert edit_distance("abc", "abc") == 0
    assert edit_distance([4, 0, 9], [4, 9]) == 1  # one digit dropped
    assert edit_distance([1, 2, 3], [3, 2, 1]) == 2  # two substitutions
    assert edit_distance([7, 7], [1, 7, 7, 1]) == 2  # two insertions
    assert cer([[4, 0, 9], [1]], [[4, 9, 9], [1, 2]]) == pytest.approx(2 / 5)


# ---------------------------------------------------------------------------
# Model


def small_model(**kw) -> Captioner:
    torch.manual_seed(0)
    args = dict(vocab_size=VOCAB_SIZE, height=32, hidden_size=32, channels=[8, 16, 16], encoder_hidden=16,
                embed_size=8, max_len=6, batch_norm=True)
    return Captioner(**{**args, **kw})


def strips(n: int, seed: int = 0):
    digits, labels = fake_digits(60, 255, seed=seed)
    return make_strips(torch.from_numpy(digits), torch.from_numpy(labels), n, max_digits=5, seed=seed)


@pytest.mark.parametrize("kw", [{}, {"attention": False}, {"encoder": "lstm"}, {"num_layers": 2, "dropout": 0.1}])
def test_teacher_forced_loss_decreases_on_a_tiny_set(kw) -> None:
    s = strips(32)
    model = small_model(**kw)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(40):
        logits = model(s.images, s.tokens)
        assert logits.shape == (32, s.tokens.shape[1] - 1, VOCAB_SIZE)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB_SIZE), s.tokens[:, 1:].reshape(-1),
                                                 ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert max(losses[-5:]) < 0.6 * losses[0], losses


@pytest.mark.parametrize("attention", [True, False])
def test_greedy_and_beam_of_one_agree(attention: bool) -> None:
    s = strips(64, seed=1)
    model = small_model(attention=attention).eval()
    with torch.no_grad():  # perturb the weights so decoding is not trivially constant
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    greedy = model.generate(s.images, beam_size=1)
    beam = model._beam(model.encode(s.images), 1, model.max_len)
    assert torch.equal(greedy, beam)
    wide = model.generate(s.images, beam_size=4)
    assert wide.shape[0] == 64 and wide.shape[1] <= model.max_len


def test_beam_search_finds_a_likelier_sequence_than_greedy() -> None:
    """Scored by the model itself, beam search's answer is never less likely than greedy's."""
    s = strips(64, seed=2)
    model = small_model().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)

    def logprob(out: torch.Tensor) -> torch.Tensor:
        tokens = torch.cat([torch.full((len(out), 1), BOS), out], dim=1)
        logp = model(s.images, tokens).log_softmax(-1).gather(2, tokens[:, 1:, None]).squeeze(2)
        return (logp * (out != PAD)).sum(1)

    with torch.no_grad():
        greedy, beam = model.generate(s.images, beam_size=1), model.generate(s.images, beam_size=5)
        width = max(greedy.shape[1], beam.shape[1])
        pad = lambda t: torch.nn.functional.pad(t, (0, width - t.shape[1]), value=PAD)  # noqa: E731
        assert logprob(pad(beam)).mean() >= logprob(pad(greedy)).mean() - 1e-4


def test_max_length_guard() -> None:
    model = small_model().eval()
    with torch.no_grad():
        model.out.bias.fill_(-50)
        model.out.bias[VOCAB_SIZE - 1] = 50  # always "9", never EOS
    images = strips(4).images
    for beam in (1, 3):
        out = model.generate(images, beam_size=beam, max_len=3)
        assert out.shape == (4, 3) and tokens_to_digits(out[0]) == [9, 9, 9]


# ---------------------------------------------------------------------------
# Real run through the CLI, then predict


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, mnist_root) -> Path:
    out = tmp_path_factory.mktemp("caption") / "run"
    proc = run_cli("run", JOB, f"data.root={mnist_root}", f"train.output_dir={out}", "train.max_steps=30",
                   "train.log_every=10", *TINY, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_short_real_run(trained_run: Path) -> None:
    result = json.loads((trained_run / "result.json").read_text())
    assert result["steps"] == 30 and result["test_samples"] == 64
    assert 0 <= result["test_sequence_accuracy"] <= 1 and 0 <= result["test_cer"]
    assert result["test_loss"] < 2.6  # below chance (ln 13 = 2.56) after 30 steps
    grid = trained_run / "predictions.png"
    assert grid.is_file() and result["prediction_grid"] == str(grid)
    with Image.open(grid) as img:
        assert img.size[0] > 200 and img.size[1] > 200
    lines = (trained_run / "test_predictions.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["index", "true", "predicted", "correct"] and len(lines) == 65


def test_predict_on_saved_png_strips(trained_run: Path, mnist_root: Path, tmp_path: Path) -> None:
    from lstm_train.cli import load_run
    from lstm_train.data.mnist import load_split

    job, task, model, info = load_run(trained_run)
    digits, labels = load_split(mnist_root, "mnist", train=False)
    s = make_strips(digits, labels, 3, max_digits=5, seed=7, height=info["height"], width=info["width"])
    paths = [str(save_png(s.images[i], tmp_path / f"strip{i}.png")) for i in range(3)]
    # An RGB copy twice the size, dark on light: converted, inverted, scaled back.
    big = Image.fromarray(255 - s.images[0].numpy()).resize((info["width"] * 2, info["height"] * 2)).convert("RGB")
    big.save(tmp_path / "big_rgb.png")
    with torch.no_grad(), task.autocast(torch.device("cpu")):  # the run's precision, as predict uses
        expected = [" ".join(map(str, tokens_to_digits(o))) or "(no digits)" for o in model.generate(s.images)]
    assert task.predict(model, info, paths, {}) == [f"{p}\t{e}" for p, e in zip(paths, expected)]
    assert load_strip(str(tmp_path / "big_rgb.png"), info["height"], info["width"], 5).shape == s.images[0].shape
    # One 28x28 MNIST digit: padded at its own size, not scaled.
    Image.fromarray(digits[0].numpy()).save(tmp_path / "digit.png")
    one = load_strip(str(tmp_path / "digit.png"), info["height"], info["width"], 5)
    assert one.shape == s.images[0].shape and int(one.sum()) == int(digits[0].sum())

    proc = run_cli("predict", str(trained_run), *paths, str(tmp_path / "big_rgb.png"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[:3] == [f"{p}\t{e}" for p, e in zip(paths, expected)]
    assert lines[3].startswith(f"{tmp_path / 'big_rgb.png'}\t") and "scaled" in proc.stderr


def test_two_process_ddp_run(mnist_root: Path, tmp_path: Path) -> None:
    """The same job under `accelerate launch`: 2 gloo processes, each test strip scored once."""
    out = tmp_path / "ddp"
    proc = accelerate_cli(2, "run", JOB, f"data.root={mnist_root}", f"train.output_dir={out}", "train.max_steps=10",
                          *TINY, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout and "MULTI_CPU" in proc.stdout
    result = json.loads((out / "result.json").read_text())
    assert result["world_size"] == 2 and result["test_samples"] == 64 and (out / "predictions.png").is_file()
    digests = result["weights_sha1_per_rank"]  # BatchNorm statistics included: one model on both ranks
    assert len(digests) == 2 and digests[0] == digests[1]


def test_submit_path_runs_the_same_task(mnist_root: Path, tmp_path: Path) -> None:
    """`lstm-train submit` (debug executor: here and now, through the SLURM Trainer) trains it too."""
    out = tmp_path / "submitted"
    proc = run_cli("submit", JOB, f"data.root={mnist_root}", f"train.output_dir={out}", "train.max_steps=5", *TINY,
                   "--executor", "debug", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["steps"] == 5 and "test_sequence_accuracy" in result and (out / "predictions.png").is_file()


def test_predict_refuses_bad_files_by_name(trained_run: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.png"
    junk.write_text("not an image")
    wide = tmp_path / "wide.png"
    Image.new("L", (2000, 30)).save(wide)
    for path, message in ((empty, "empty.png: empty file"), (junk, "junk.png: not a readable image"),
                          (wide, "wide.png: 2000x30 is too wide"), (tmp_path / "gone.png", "gone.png: no such file")):
        proc = run_cli("predict", str(trained_run), str(path))
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
