"""Entity-level scores for BIO/IOB tag sequences (NER, chunking), the way CoNLL scored them.

Entities are read from tag sequences by `seqeval` in its default mode, which
follows the CoNLL `conlleval` script: an `I-X` after `O` or after another type
starts a new entity (IOB1 files do this on purpose, IOB2 files only by
mistake); such transitions are counted here so a run can say how many it saw.
Scores are kept as three counts (correct, predicted, gold entities), which add
up over batches and processes; precision, recall and F1 are computed from the
totals, so they equal seqeval's micro-averaged scores on the whole split.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from seqeval.metrics.sequence_labeling import get_entities

from .confusion import precision_recall_f1  # noqa: F401 - entity scores are these three counts

_BIO_TAG = re.compile(r"^(O|[BIES]-.+)$")


def is_bio(tags: Iterable[str]) -> bool:
    """True when every tag is O or PREFIX-TYPE (B/I/E/S) and some tag has a B- or I- prefix."""
    tags = set(tags)
    return bool(tags) and all(_BIO_TAG.match(t) for t in tags) and any(t[:2] in ("B-", "I-") for t in tags)


def entity_type(tag: str) -> str | None:
    return None if tag == "O" or len(tag) < 3 else tag[2:]


def invalid_transitions(sentences: Iterable[Sequence[str]]) -> int:
    """`I-X` tags that do not continue an `X` entity (after O, at a sentence start or after
    another type): conlleval and seqeval count each as the start of a new entity."""
    count = 0
    for tags in sentences:
        previous = "O"
        for tag in tags:
            continues = entity_type(previous) == tag[2:] and previous[:2] in ("B-", "I-")
            if tag.startswith("I-") and not continues:
                count += 1
            previous = tag
    return count


def entity_counts(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict[str, int]:
    """{correct, predicted, gold} entity counts over sentences (exact span and type matches)."""
    correct = n_predicted = n_gold = 0
    for g, p in zip(gold, predicted):
        gold_entities, predicted_entities = set(get_entities(list(g))), set(get_entities(list(p)))
        correct += len(gold_entities & predicted_entities)
        n_predicted += len(predicted_entities)
        n_gold += len(gold_entities)
    return {"correct": correct, "predicted": n_predicted, "gold": n_gold}

