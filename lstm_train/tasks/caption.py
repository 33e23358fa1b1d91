"""Read strips of handwritten digits as text: image in, token sequence out (one-to-many).

The tutorial's "2.3 Todo".  Strips of 1 to `data.max_digits` real MNIST digits
(see `lstm_train.data.strips`) are read by a CNN encoder and an LSTM decoder
with attention (see `lstm_train.models.captioner`) that writes "4 0 9".

Training is teacher-forced cross-entropy on the next token.  Evaluation decodes
greedily (beam search when `model.beam_size` > 1) and reports exact-sequence
accuracy and the character error rate (edit distance over reference digits).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data import mnist
from ..files.outputs import png_bytes, write_run_output
from ..data.holdout import holdout
from ..data.strips import (
    DIGIT, PAD, VOCAB_SIZE, digits_to_text, make_strips, save_png, text_to_tokens, tokens_to_digits,
)
from ..models.captioner import Captioner
from .caption_text import cer, edit_distance
from .base import Split, Splits, Task, note, predict_files
from .registry import BUILTIN_TASKS


def digit_lists(tokens: torch.Tensor) -> list[list[int]]:
    return [tokens_to_digits(row) for row in tokens.tolist()]


class CaptionTask(Task):
    registration = BUILTIN_TASKS["caption"]
    primary_metric = "sequence_accuracy"  # the whole strip read right

    # -- data and model -------------------------------------------------------------

    def strips(self, train: bool):
        data = self.job.data
        mnist.ensure_files(data.root, data.dataset, data.download)
        digits, labels = mnist.load_split(data.root, data.dataset, train=train)
        return make_strips(
            digits, labels, data.num_train if train else data.num_test,
            max_digits=data.max_digits, min_digits=data.min_digits, height=data.height, width=data.strip_width,
            min_gap=data.min_gap, max_gap=data.max_gap, seed=data.seed if train else data.seed + 1,
        )

    def load_data(self) -> Splits:
        data = self.job.data
        train, test = self.strips(train=True), self.strips(train=False)
        info = {
            "height": data.height, "width": data.strip_width, "max_digits": data.max_digits,
            "vocab_size": VOCAB_SIZE,
        }
        columns, val = (train.images, train.tokens), None
        if data.val_fraction:  # strips held out of training for validation (a sweep's points are compared on it)
            columns, val = holdout(columns, data.val_fraction, data.seed)
        return Splits(train=columns, test=(test.images, test.tokens), val=val, info=info)

    def build_model(self, info: dict[str, Any]) -> nn.Module:
        m = self.job.model
        return Captioner(
            vocab_size=info["vocab_size"], height=info["height"], hidden_size=m.hidden_size,
            num_layers=m.num_layers, dropout=m.dropout, embed_size=m.embed_size, encoder=m.encoder,
            channels=m.channels, width_pools=m.width_pools, batch_norm=m.batch_norm, downsample=m.downsample,
            encoder_lstm_layers=m.encoder_lstm_layers,
            encoder_hidden=m.encoder_hidden, bidirectional=m.bidirectional, attention=m.attention,
            attention_size=m.attention_size, max_len=m.max_len or info["max_digits"] + 1, beam_size=m.beam_size,
        )

    # -- training and evaluation ----------------------------------------------------

    @staticmethod
    def _trim(tokens: torch.Tensor) -> torch.Tensor:
        """Drop the all-PAD tail columns of a batch: no decoder steps wasted on them."""
        longest = int((tokens != PAD).sum(1).max())
        return tokens[:, :longest]

    def _token_loss(self, logits: torch.Tensor, tokens: torch.Tensor, reduction: str) -> torch.Tensor:
        return F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1),
            ignore_index=PAD, reduction=reduction, label_smoothing=self.job.model.label_smoothing,
        )

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...], info: dict[str, Any]) -> torch.Tensor:
        images, tokens = batch
        tokens = self._trim(tokens)
        return self._token_loss(model(images, tokens), tokens, "mean")

    def eval_sums(self, model: nn.Module, batch: tuple[torch.Tensor, ...],
                  info: dict[str, Any]) -> dict[str, torch.Tensor]:
        net = model
        images, tokens = batch
        tokens = self._trim(tokens)
        memory = net.encode(images)
        logits = net.teacher_forced(memory, tokens)
        loss_sum = self._token_loss(logits, tokens, "sum")
        decoded = net.generate(images, memory=memory)
        sums = sequence_sums(digit_lists(decoded), digit_lists(tokens))
        dev = images.device
        out = {k: torch.tensor(float(v), device=dev) for k, v in sums.items()}
        out["loss_sum"] = loss_sum.detach().double()
        out["tokens"] = torch.tensor(float((tokens[:, 1:] != PAD).sum()), device=dev)
        return out

    def metrics(self, sums: dict[str, float], info: dict[str, Any], prefix: str = "test_") -> dict[str, float]:
        count = max(sums["count"], 1)
        return {
            f"{prefix}loss": sums["loss_sum"] / max(sums["tokens"], 1),
            f"{prefix}sequence_accuracy": sums["exact"] / count,
            f"{prefix}cer": sums["edits"] / max(sums["ref_chars"], 1),
            f"{prefix}samples": int(sums["count"]),
        }

    # -- after training: the prediction grid ------------------------------------------

    def decode_all(self, model: nn.Module, images: torch.Tensor, batch: int = 1000) -> list[list[int]]:
        net = model
        net.eval()
        out: list[list[int]] = []
        with torch.no_grad(), self.autocast(images.device):
            for start in range(0, len(images), batch):
                out += digit_lists(net.generate(images[start : start + batch]))
        return out

    def finish(self, model: nn.Module, splits: Splits, run_dir: Path) -> dict[str, Any]:
        images, tokens = splits.test
        predicted = self.decode_all(model, images, self.job.data.eval_batch_size)
        truth = digit_lists(tokens)
        wrong = [i for i, (p, t) in enumerate(zip(predicted, truth)) if p != t]
        lines = ["index\ttrue\tpredicted\tcorrect"]
        lines += [
            f"{i}\t{digits_to_text(t)}\t{digits_to_text(p)}\t{int(p == t)}"
            for i, (p, t) in enumerate(zip(predicted, truth))
        ]
        write_run_output(run_dir, "test_predictions.tsv", "\n".join(lines) + "\n")
        # The grid: the first test strips as they come, then mistakes (if any) from the rest.
        shown = list(range(min(24, len(truth))))
        shown += [i for i in wrong if i not in shown][:12]
        path = prediction_grid(
            images[shown].cpu(), [predicted[i] for i in shown], [truth[i] for i in shown], shown,
            run_dir / "predictions.png", n_wrong=len(wrong), n_total=len(truth), n_first=min(24, len(truth)),
        )
        return {
            "test_sequence_accuracy_by_length": accuracy_by_length(predicted, truth),
            "test_cer_by_length": cer_by_length(predicted, truth),
            "test_mistakes": len(wrong),
            "prediction_grid": str(path),
            "images": {"predictions": str(path)},
        }

    # -- new strips -------------------------------------------------------------------

    def predict(self, model: nn.Module, info: dict[str, Any], inputs: list[str], options: dict[str, Any]) -> list[str]:
        net = model
        net.eval()
        dev = next(net.parameters()).device
        lines = []
        for name in predict_files(inputs, "image files of digit strips"):
            strip = load_strip(name, info["height"], info["width"], info["max_digits"])
            with torch.no_grad(), self.autocast(dev):
                digits = digit_lists(net.generate(strip[None].to(dev)))[0]
            lines.append(f"{name}\t{digits_to_text(digits) or '(no digits)'}")
        return lines


    def read_labelled(self, files: list[Path], info: dict[str, Any]) -> Split:
        """Strips for `evaluate`: index files of `IMAGE<TAB>DIGITS` lines (`write_strips` writes one:
        PNG strips and strips.tsv), each image read as `predict` reads it, scored as the test split."""
        images, rows = [], []
        for index in files:
            for name, where in read_strip_index(index):
                images.append(load_strip(str(name), info["height"], info["width"], info["max_digits"]))
                rows.append(where)
        return torch.stack(images), torch.stack([tokens_of(t, info["max_digits"]) for t in rows])


TASK = CaptionTask


# ---------------------------------------------------------------------------
# Helpers


def sequence_sums(predicted: list[list[int]], truth: list[list[int]]) -> dict[str, float]:
    """Additive statistics: count, exact matches, edit distance and reference length."""
    sums = {"count": 0.0, "exact": 0.0, "edits": 0.0, "ref_chars": 0.0}
    for p, t in zip(predicted, truth):
        sums["count"] += 1
        sums["exact"] += float(p == t)
        sums["edits"] += edit_distance(p, t)
        sums["ref_chars"] += len(t)
    return sums


def accuracy_by_length(predicted: list[list[int]], truth: list[list[int]]) -> dict[str, float]:
    """Exact-sequence accuracy per true length: {"1": ..., "5": ...}."""
    counts: dict[int, list[int]] = {}
    for p, t in zip(predicted, truth):
        seen = counts.setdefault(len(t), [0, 0])
        seen[0] += 1
        seen[1] += p == t
    return {str(n): right / total for n, (total, right) in sorted(counts.items())}


def cer_by_length(predicted: list[list[int]], truth: list[list[int]]) -> dict[str, float]:
    groups: dict[int, tuple[list, list]] = {}
    for p, t in zip(predicted, truth):
        hyp, ref = groups.setdefault(len(t), ([], []))
        hyp.append(p)
        ref.append(t)
    return {str(n): cer(hyp, ref) for n, (hyp, ref) in sorted(groups.items())}


def load_strip(name: str, height: int, width: int, max_digits: int) -> torch.Tensor:
    """An image file as a uint8 [height, width] strip, white digits on black.

    Colour and alpha become gray; dark ink on light paper is inverted; an image of
    another size is scaled (keeping its aspect ratio) to fit and padded with black.
    Files that are missing, empty, not images, or too far from a strip's shape are
    refused with a message that names the file.
    """
    from PIL import Image

    gray = read_gray(name)
    w, h = gray.size
    if w < 8 or h < 8:
        raise ValueError(f"{name}: {w}x{h} pixels is too small for a digit strip (the model reads {width}x{height})")
    pixels = torch.frombuffer(bytearray(gray.tobytes()), dtype=torch.uint8).reshape(h, w)
    if pixels.float().mean() > 127:  # dark ink on light paper: MNIST is the reverse
        pixels = 255 - pixels
        gray = Image.fromarray(pixels.numpy(), mode="L")
    if (w, h) == (width, height):
        return pixels.clone()
    return fit_strip(name, gray, height, width, max_digits)


def read_gray(name: str) -> Any:
    """An image file as an 8-bit gray PIL image: 16-bit and float gray scaled to 0..255, alpha
    composed over black; a file that is missing, empty or not an image refused by name."""
    from PIL import Image, UnidentifiedImageError

    from ..data.readers.images import ImageTooLarge, open_image

    path = Path(name)
    if not path.exists():
        raise ValueError(f"{name}: no such file")
    if path.is_dir():
        raise ValueError(f"{name}: is a folder, not an image file")
    if path.stat().st_size == 0:
        raise ValueError(f"{name}: empty file (0 bytes), not an image")
    try:
        with open_image(path) as img:
            img.load()
            if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit or float gray: scale to 0..255
                import numpy as np

                values = np.asarray(img, dtype=np.float64)
                top = values.max() if values.size and values.max() > 0 else 1.0
                return Image.fromarray((values.clip(0, None) * (255.0 / top)).round().astype(np.uint8), mode="L")
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
                return Image.alpha_composite(background, rgba).convert("L")
            return img.convert("L")
    except ImageTooLarge:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{name}: not a readable image ({type(e).__name__}: {e})") from None


def fit_strip(name: str, gray: Any, height: int, width: int, max_digits: int) -> torch.Tensor:
    """A gray image of another size than the model's strip, placed on a black [height, width] strip:
    as it is when smaller with digits about the right size, else scaled (keeping its aspect ratio)
    to fit; one so wide that its digits would shrink far below the trained size is refused."""
    from PIL import Image

    w, h = gray.size
    if w <= width and h <= height and h >= DIGIT * 2 // 3:  # smaller, digits about the right size: pad only
        how, placed = "", gray
    else:  # scale (keeping the aspect ratio) to fit
        scale = min(height / h, width / w)
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
        if new_h < DIGIT * 2 // 3:
            raise ValueError(
                f"{name}: {w}x{h} is too wide for a strip of at most {max_digits} digits: scaled to fit the "
                f"model's {width}x{height} its digits would be {new_h} px tall (trained on {DIGIT}); "
                f"crop it into shorter strips"
            )
        how, placed = f" scaled to {new_w}x{new_h} and", gray.resize((new_w, new_h), Image.BILINEAR)
    canvas = Image.new("L", (width, height), 0)
    canvas.paste(placed, (0, (height - placed.size[1]) // 2))
    note(f"{name}: {w}x{h} image{how} padded to {width}x{height}")
    return torch.frombuffer(bytearray(canvas.tobytes()), dtype=torch.uint8).reshape(height, width).clone()


def prediction_grid(
    images: torch.Tensor, predicted: list[list[int]], truth: list[list[int]], indices: list[int],
    path: Path, *, n_wrong: int, n_total: int, n_first: int, columns: int = 3,
) -> Path:
    """A PNG of strips, each titled with the predicted text; mistakes in red with the true text."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    rows = max(1, -(-n // columns))
    h, w = images.shape[1:]
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 2.6 * w / h / 5 * 1.6, rows * 0.95), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, ax in enumerate(axes.flat[:n]):
        ax.imshow(images[k].numpy(), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ok = predicted[k] == truth[k]
        said = digits_to_text(predicted[k]) or "(nothing)"
        if ok:
            ax.set_title(f"#{indices[k]}  ✓ {said}", fontsize=8, color="darkgreen", pad=2)
            continue
        ax.set_title(f"#{indices[k]}  ✗ {said}   (true: {digits_to_text(truth[k])})", fontsize=8, color="red", pad=2)
        ax.axis("on")
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_edgecolor("red")
            side.set_linewidth(2)
    accuracy = 1 - n_wrong / max(n_total, 1)
    fig.suptitle(
        f"Predicted text of test strips (green ✓ right; red ✗ wrong, with the true text): the first {n_first}, "
        f"then mistakes among the rest.\nAll {n_total} test strips: {n_total - n_wrong} read exactly "
        f"({accuracy:.2%}), {n_wrong} wrong",
        fontsize=9,
    )
    fig.tight_layout()
    data = png_bytes(fig, dpi=110)
    plt.close(fig)
    return write_run_output(path.parent, path.name, data)


STRIP_INDEX_HEADER = "image\tdigits"
MAX_STRIP_INDEX_LINE = 4096  # an index line is a file name and a few digits


def read_strip_index(index: Path) -> Iterator[tuple[Path, tuple[Path, int, str]]]:
    """(image path, (index, line, digits)) of each line of a strips index: `IMAGE<TAB>DIGITS`, the image
    relative to the index's folder, an optional `image<TAB>digits` header, read a line at a time."""
    from ..data.textio import iter_utf8_lines

    for number, line in enumerate(iter_utf8_lines(index, ValueError), 1):
        if not line.strip() or (number == 1 and line.strip() == STRIP_INDEX_HEADER):
            continue
        cells = line.rstrip("\r").split("\t")
        if len(cells) != 2 or len(line) > MAX_STRIP_INDEX_LINE:
            raise ValueError(f"{index}:{number}: a strips index line is IMAGE<TAB>DIGITS (strip.png<TAB>4 0 9), "
                             f"got {line[:80]!r}")
        yield index.parent / cells[0], (index, number, cells[1])


def tokens_of(where: tuple[Path, int, str], max_digits: int) -> torch.Tensor:
    """The token row of a strip's digits (`text_to_tokens`), an error naming the index line."""
    index, number, text = where
    try:
        return text_to_tokens(text, max_digits)
    except ValueError as e:
        raise ValueError(f"{index}:{number}: {e} (the run reads strips of 1 to {max_digits} digits)") from None


def write_strips(images: torch.Tensor, tokens: torch.Tensor, folder: Path) -> Path:
    """Strips as PNG files and their index `strips.tsv` (what `evaluate` reads): the test split of
    a caption run as files, or any strips a user makes."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [STRIP_INDEX_HEADER]
    for i, (image, row) in enumerate(zip(images, tokens)):
        save_png(image, folder / f"strip{i:06d}.png")
        lines.append(f"strip{i:06d}.png\t{digits_to_text(tokens_to_digits(row))}")
    index = folder / "strips.tsv"
    index.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return index
