"""A digit strip's geometry and token ids: what a caption job's schema checks, without torch
(`lstm_train.data.strips` builds the strips)."""

from __future__ import annotations

DIGIT = 28  # MNIST digits are 28 x 28

# Token ids: the digits follow the three specials.
PAD, BOS, EOS = 0, 1, 2
FIRST_DIGIT = 3
VOCAB_SIZE = FIRST_DIGIT + 10


def min_width(max_digits: int, max_gap: int) -> int:
    """The narrowest canvas that holds `max_digits` digits at the widest spacing."""
    return max_digits * DIGIT + (max_digits - 1) * max(max_gap, 0)


def default_width(max_digits: int, max_gap: int) -> int:
    """`min_width` plus a little room for the random left margin, rounded up to a multiple of 8."""
    return -(-(min_width(max_digits, max_gap) + 4) // 8) * 8
