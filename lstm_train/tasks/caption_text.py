"""Sequence metrics for text outputs: edit distance and character error rate."""

from __future__ import annotations

from collections.abc import Sequence


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance: the fewest insertions, deletions and substitutions turning a into b."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def cer(hypotheses: Sequence[Sequence], references: Sequence[Sequence]) -> float:
    """Character error rate: total edit distance over total reference length."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    errors = sum(edit_distance(h, r) for h, r in zip(hypotheses, references))
    total = sum(len(r) for r in references)
    return errors / max(total, 1)
