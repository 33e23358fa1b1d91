"""The Stanford Sentiment Treebank: labelled PTB-style trees, one per line.

Every node of a tree carries a sentiment label 0-4 (very negative .. very
positive); the root's label is the sentence's.  The standard protocol (Tai et
al. 2015 and most LSTM papers) trains on every labelled phrase of the train
trees and reports accuracy on the test sentences, so `read_sst` returns either
the phrases (each node's words with its label, deduplicated) or the sentences
(roots) of a file.

    (3 (2 It) (4 (4 (2 's) (4 (3 (2 a) (4 (3 lovely) (2 film))) ...

SST-2 drops the neutral label (2) and maps 0-1 to negative, 3-4 to positive;
SST-5 keeps all five.  The trees are split on ASCII spaces only: train line
4342 holds a no-break space inside a token ("8 1/2"), which `str.split()`
would cut.  PTB escapes are undone (-LRB- -> "(", \\/ -> "/"), so a sentence
typed at `predict` time finds the same words.
"""

from __future__ import annotations

from pathlib import Path

from .textfiles import TextDataError
from ..textio import read_utf8

CLASS_NAMES = {
    2: ["negative", "positive"],
    5: ["very negative", "negative", "neutral", "positive", "very positive"],
}
_UNESCAPE = {"-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}"}


def unescape(token: str) -> str:
    return _UNESCAPE.get(token, token).replace("\\/", "/").replace("\\*", "*")


def parse_tree(line: str, where: str = "tree") -> list[tuple[int, list[str]]]:
    """Every node of one tree as (label, words), children before parents: the root is last."""
    pieces = [p for p in line.replace("(", " ( ").replace(")", " ) ").split(" ") if p]
    stack: list[tuple[int, list[str]]] = []
    nodes: list[tuple[int, list[str]]] = []
    i = 0
    while i < len(pieces):
        piece = pieces[i]
        if piece == "(":
            if nodes and not stack:
                raise TextDataError(f"{where}: text after the end of the tree")
            label = pieces[i + 1] if i + 1 < len(pieces) else ""
            if label not in ("0", "1", "2", "3", "4"):
                raise TextDataError(f"{where}: a node's label must be 0-4, found {label!r}")
            stack.append((int(label), []))
            i += 2
            continue
        if not stack:
            raise TextDataError(f"{where}: {piece!r} outside a node (unbalanced parentheses?)")
        if piece == ")":
            label, words = stack.pop()
            if not words:
                raise TextDataError(f"{where}: a node without words")
            nodes.append((label, words))
            if stack:
                stack[-1][1].extend(words)
        else:
            stack[-1][1].append(unescape(piece))
        i += 1
    if stack or not nodes:
        raise TextDataError(f"{where}: unbalanced parentheses (a tree per line is expected)")
    return nodes


def binary_label(label: int) -> int | None:
    """SST-2: 0-1 negative (0), 3-4 positive (1), neutral dropped (None)."""
    return None if label == 2 else int(label > 2)


def read_sst(path: Path, classes: int, phrases: bool) -> tuple[list[list[str]], list[int]]:
    """Words and labels of a tree file: its sentences, or (`phrases`) every labelled node,
    each distinct phrase once (compared case-insensitively; the first label is kept)."""
    if classes not in CLASS_NAMES:
        raise ValueError(f"SST has 2 or 5 classes, not {classes}")
    text = read_utf8(path, TextDataError, missing="; the SST trees belong in "
                     "<data.root>/SST/trees/{train,dev,test}.txt (set data.root or LSTM_TRAIN_DATA)")
    texts: list[list[str]] = []
    labels: list[int] = []
    seen: set[str] = set()
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip(" \r"):
            continue
        nodes = parse_tree(line.strip(" \r"), f"{path}:{lineno}")
        for label, words in nodes if phrases else nodes[-1:]:
            target = label if classes == 5 else binary_label(label)
            if target is None:
                continue
            if phrases:
                key = " ".join(words).lower()
                if key in seen:
                    continue
                seen.add(key)
            texts.append(words)
            labels.append(target)
    return texts, labels
