"""Strips of handwritten digits for image-to-text: MNIST digits side by side.

A strip holds 1 to `max_digits` real MNIST digits, left to right, with random
gaps between them (negative gaps let neighbours overlap their blank margins;
pixels are combined with max), a random vertical offset for each digit and a
random left margin, on a fixed-size black canvas (`height` x `width`).

Generation is seeded and deterministic, and takes the digits of one MNIST split
only: `make_strips(*load_split(root, "mnist", train=True), ...)` builds training
strips from training digits, and the test strips come from the test digits, so
no handwritten digit is ever seen in both.

Targets are token rows: BOS, one token per digit, EOS, then PAD.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

# The geometry and token ids, torch-free for the job schema (`lstm-train config`).
from .strip_layout import BOS, DIGIT, EOS, FIRST_DIGIT, PAD, VOCAB_SIZE, default_width, min_width  # noqa: F401


@dataclass
class StripSet:
    """Generated strips.

    images: uint8 [N, height, width], white digits on black like MNIST.
    tokens: int64 [N, max_digits + 2]: BOS, digit tokens, EOS, PAD...
    lengths: int64 [N], the number of digits of each strip.
    sources: int64 [N, max_digits], the index into the source split of each digit (-1: none).
    """

    images: torch.Tensor
    tokens: torch.Tensor
    lengths: torch.Tensor
    sources: torch.Tensor

    def __len__(self) -> int:
        return len(self.images)


def check_strip_arguments(digits: torch.Tensor, labels: torch.Tensor, max_digits: int, min_digits: int,
                          height: int, width: int | None, min_gap: int, max_gap: int) -> int:
    """`make_strips`' arguments checked, one error line each; the strip width to use."""
    if digits.dim() != 3 or tuple(digits.shape[1:]) != (DIGIT, DIGIT):
        raise ValueError(f"digits must be [M, {DIGIT}, {DIGIT}], got {tuple(digits.shape)}")
    if len(digits) != len(labels) or len(digits) == 0:
        raise ValueError(f"{len(digits)} digits and {len(labels)} labels: need the same number, at least one")
    if not 1 <= min_digits <= max_digits:
        raise ValueError(f"need 1 <= min_digits <= max_digits, got {min_digits} and {max_digits}")
    if min_gap > max_gap or min_gap <= -DIGIT:
        raise ValueError(f"need {-DIGIT} < min_gap <= max_gap, got {min_gap} and {max_gap}")
    if height < DIGIT:
        raise ValueError(f"height {height} is less than a digit's {DIGIT} pixels")
    width = default_width(max_digits, max_gap) if width is None else width
    if width < min_width(max_digits, max_gap):
        raise ValueError(
            f"width {width} cannot hold {max_digits} digits with gaps up to {max_gap} "
            f"(needs at least {min_width(max_digits, max_gap)})"
        )
    return width


def paste_digits(digits: torch.Tensor, used: torch.Tensor, sources: torch.Tensor, rows: torch.Tensor,
                 cols: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Strips [N, height, width] with digit `sources[i, k]` at (`rows`, `cols`) of slot k where `used`."""
    images = torch.zeros(len(used), height, width, dtype=torch.uint8)
    for k in range(used.shape[1]):
        idx = used[:, k].nonzero().squeeze(1)
        if len(idx) == 0:
            continue
        src = digits[sources[idx, k]]
        # Scatter each digit at (rows, cols) with max: build index grids once per slot.
        r = rows[idx, k][:, None, None] + torch.arange(DIGIT)[None, :, None]
        c = cols[idx, k][:, None, None] + torch.arange(DIGIT)[None, None, :]
        n = idx[:, None, None].expand(-1, DIGIT, DIGIT)
        r, c = r.expand(-1, DIGIT, DIGIT), c.expand(-1, DIGIT, DIGIT)
        images[n, r, c] = torch.maximum(images[n, r, c], src)
    return images


def make_strips(
    digits: torch.Tensor,
    labels: torch.Tensor,
    num: int,
    *,
    max_digits: int = 5,
    min_digits: int = 1,
    height: int = 32,
    width: int | None = None,
    min_gap: int = -4,
    max_gap: int = 4,
    seed: int = 0,
) -> StripSet:
    """`num` strips from `digits` (uint8 [M, 28, 28]) and their `labels` (int [M]), reproducibly.

    The same arguments always give the same strips (a private generator is used;
    the global RNG is neither read nor changed).
    """
    width = check_strip_arguments(digits, labels, max_digits, min_digits, height, width, min_gap, max_gap)

    gen = torch.Generator().manual_seed(seed)
    # Draw every random number up front, in fixed shapes, so the strips depend only on the seed.
    lengths = torch.randint(min_digits, max_digits + 1, (num,), generator=gen)
    sources = torch.randint(0, len(digits), (num, max_digits), generator=gen)
    gaps = torch.randint(min_gap, max_gap + 1, (num, max_digits), generator=gen)
    rows = torch.randint(0, height - DIGIT + 1, (num, max_digits), generator=gen)
    margin = torch.rand(num, generator=gen)

    slot = torch.arange(max_digits)
    used = slot[None, :] < lengths[:, None]
    sources = torch.where(used, sources, torch.full_like(sources, -1))
    gaps[:, 0] = 0
    gaps = torch.where(used, gaps, torch.zeros_like(gaps))
    # Left edge of each digit without margin, then a margin drawn from the room left over.
    offsets = slot[None, :] * DIGIT + gaps.cumsum(1)
    extent = offsets.gather(1, (lengths - 1)[:, None]).squeeze(1) + DIGIT
    room = width - extent
    left = (margin * (room + 1).float()).long().clamp(max=room)
    cols = offsets + left[:, None]

    images = paste_digits(digits.to(torch.uint8), used, sources, rows, cols, height, width)

    tokens = torch.full((num, max_digits + 2), PAD, dtype=torch.long)
    tokens[:, 0] = BOS
    safe = sources.clamp(min=0)
    digit_tokens = labels.long()[safe] + FIRST_DIGIT
    tokens[:, 1:-1] = torch.where(used, digit_tokens, torch.full_like(digit_tokens, PAD))
    tokens.scatter_(1, (lengths + 1)[:, None], EOS)
    return StripSet(images, tokens, lengths, sources)


# ---------------------------------------------------------------------------
# Tokens <-> text


def tokens_to_digits(tokens: list[int] | torch.Tensor) -> list[int]:
    """The digits of a token row: skips BOS, stops at EOS or PAD, ignores anything else."""
    if isinstance(tokens, torch.Tensor):
        tokens = tokens.tolist()
    out = []
    for t in tokens:
        if t == BOS:
            continue
        if t in (EOS, PAD):
            break
        if FIRST_DIGIT <= t < VOCAB_SIZE:
            out.append(t - FIRST_DIGIT)
    return out


def digits_to_text(digits: list[int]) -> str:
    """[4, 0, 9] -> "4 0 9" (the strips' written form)."""
    return " ".join(str(d) for d in digits)


def text_to_tokens(text: str, max_digits: int) -> torch.Tensor:
    """"4 0 9" (or "409") -> a padded token row like `make_strips` writes."""
    digits = [int(ch) for ch in text if ch.isdigit()]
    if not 1 <= len(digits) <= max_digits:
        raise ValueError(f"{text!r}: need 1 to {max_digits} digits")
    row = torch.full((max_digits + 2,), PAD, dtype=torch.long)
    row[0] = BOS
    row[1 : len(digits) + 1] = torch.tensor(digits) + FIRST_DIGIT
    row[len(digits) + 1] = EOS
    return row


# ---------------------------------------------------------------------------
# PNG files


def save_png(image: torch.Tensor, path: str | Path) -> Path:
    """Write one uint8 [H, W] strip as an 8-bit grayscale PNG."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.detach().cpu().to(torch.uint8).numpy(), mode="L").save(path)
    return path
