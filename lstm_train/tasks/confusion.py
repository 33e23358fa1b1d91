"""The confusion matrix statistics and plot every classifying task reports (text_classify's
classes, tag's tags): one per-class statistic, one plot.

Rows are the gold classes, columns the predicted ones.  A task may have more rows than
columns: gold labels no output can give (a tag seen only in the test file) are always wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..files.outputs import png_bytes, write_run_output


def precision_recall_f1(correct: float, predicted: float, gold: float) -> tuple[float, float, float]:
    """Precision, recall and F1 from counts (0 where a denominator is 0, as conlleval and
    scikit-learn's zero_division=0)."""
    p = correct / predicted if predicted else 0.0
    r = correct / gold if gold else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def per_class(confusion: torch.Tensor, names: list[str]) -> dict[str, dict[str, float]]:
    """gold / predicted / correct counts, precision, recall and F1 of every class that occurs
    (as gold or as a prediction), in `names` order."""
    out = {}
    known = confusion.shape[1]
    for i, name in enumerate(names):
        gold = int(confusion[i].sum())
        predicted = int(confusion[:, i].sum()) if i < known else 0
        correct = int(confusion[i, i]) if i < known else 0
        if not gold and not predicted:
            continue
        p, r, f1 = precision_recall_f1(correct, predicted, gold)
        out[name] = {"gold": gold, "predicted": predicted, "correct": correct, "precision": round(p, 4),
                     "recall": round(r, 4), "f1": round(f1, 4)}
    return out


def most_confused(confusion: torch.Tensor, names: list[str], top: int) -> list[list[Any]]:
    """The `top` (gold, predicted, count) pairs with the most errors."""
    errors = confusion.clone()
    diagonal = torch.arange(min(errors.shape))
    errors[diagonal, diagonal] = 0
    counts, flat = errors.flatten().sort(descending=True)
    pairs = []
    for count, index in zip(counts.tolist()[:top], flat.tolist()[:top]):
        if count == 0:
            break
        g, p = divmod(index, errors.shape[1])
        pairs.append([names[g], names[p], count])
    return pairs


def confusion_plot(confusion: torch.Tensor, names: list[str], path: Path, title: str,
                   shown: list[str] | None = None) -> str:
    """Counts with rows = gold, columns = predicted, shaded by share of the gold row; `shown`
    limits it to some classes (the most confused tags of a large tag set).  Returns the path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    shown = shown or names
    rows = [names.index(n) for n in shown]
    cols = [names.index(n) for n in shown if names.index(n) < confusion.shape[1]]
    counts = confusion[rows].double()
    shares = (counts / counts.sum(1, keepdim=True).clamp_min(1))[:, cols].numpy()
    counts = counts[:, cols].numpy()
    fig, ax = plt.subplots(figsize=(2.2 + 0.6 * len(cols), 1.2 + 0.5 * len(rows)))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(rows)):
        for j in range(len(cols)):
            ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=8,
                    color="white" if shares[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(cols)), [names[c] for c in cols], rotation=30 if len(cols) < 8 else 90, ha="right")
    ax.set_yticks(range(len(rows)), [names[r] for r in rows])
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the gold class")
    fig.tight_layout()
    data = png_bytes(fig, dpi=100)
    plt.close(fig)
    return str(write_run_output(Path(path).parent, Path(path).name, data))
