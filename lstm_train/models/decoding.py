"""Greedy and beam-search decoding for any step-by-step decoder, batched.

Shared by the captioner (digits from an image) and the translator (target
subwords from a source sentence).  A decoder is seen through one function,

    step(tokens [N], state, memory) -> (logits [N, V], state)

that reads the previous token of each of N rows and returns next-token logits
and its new recurrent state; `memory` is what the step attends over (encoder
outputs, masks) and never changes.  Beam search runs B sentences x k beams as
N = B * k rows, so `memory` and `state` must come with each sentence's rows
repeated k times (`repeat_rows`), and `reorder(state, rows)` picks the rows of
the surviving beams after each step (default: index dim 0 of every tensor).

Both searches return tokens [B, L] without BOS: each row its tokens, EOS, then
PAD; a row that reached its `max_len` without EOS simply stops there.  L is the
longest row (no all-PAD columns at the end).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

Step = Callable[[torch.Tensor, Any, Any], tuple[torch.Tensor, Any]]


def repeat_rows(x: Any, k: int) -> Any:
    """Each row (dim 0) of every tensor in x (a tensor, None, or a tuple/list of them) k times in a row."""
    if x is None or k == 1:
        return x
    if isinstance(x, torch.Tensor):
        return x.repeat_interleave(k, dim=0)
    return type(x)(repeat_rows(item, k) for item in x)


def select_rows(state: Any, rows: torch.Tensor) -> Any:
    """`state` with only `rows` (dim 0 of every tensor, recursively through tuples and lists)."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.index_select(0, rows)
    return type(state)(select_rows(item, rows) for item in state)


def _limits(max_len: int | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    """Per-sentence step limit as a long tensor [B]."""
    if isinstance(max_len, torch.Tensor):
        return max_len.to(device=device, dtype=torch.long).clamp_min(1)
    return torch.full((batch,), max(int(max_len), 1), dtype=torch.long, device=device)


def _forbid(logits: torch.Tensor, forbidden: Sequence[int]) -> torch.Tensor:
    logits = logits.float()
    if forbidden:
        logits = logits.clone()
        logits[:, list(forbidden)] = float("-inf")
    return logits


def _trim(tokens: torch.Tensor, pad: int) -> torch.Tensor:
    """Drop all-PAD columns at the end."""
    if tokens.shape[1] == 0:
        return tokens
    width = int((tokens != pad).sum(1).max()) if len(tokens) else 0
    return tokens[:, :width]


@torch.no_grad()
def greedy_search(step: Step, state: Any, memory: Any, batch: int, *, bos: int, eos: int, pad: int,
                  max_len: int | torch.Tensor, forbidden: Sequence[int] = (), device: torch.device | None = None,
                  ) -> torch.Tensor:
    """The most likely next token at every step, until EOS or the row's `max_len` (int or [B])."""
    device = device or torch.device("cpu")
    limits = _limits(max_len, batch, device)
    tokens = torch.full((batch,), bos, dtype=torch.long, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    out: list[torch.Tensor] = []
    for t in range(int(limits.max())):
        logits, state = step(tokens, state, memory)
        tokens = _forbid(logits, forbidden).argmax(dim=1)
        tokens = torch.where(done, torch.full_like(tokens, pad), tokens)
        out.append(tokens)
        done = done | (tokens == eos) | (limits <= t + 1)
        if bool(done.all()):
            break
    if not out:
        return torch.zeros(batch, 0, dtype=torch.long, device=device)
    return _trim(torch.stack(out, dim=1), pad)


@torch.no_grad()
def _keep_better(better: torch.Tensor, hypothesis: torch.Tensor, score: torch.Tensor, best: torch.Tensor,
                 best_score: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sentence's best hypothesis and score, replaced where `better` says the new one wins."""
    return torch.where(better[:, None], hypothesis, best), torch.where(better, score, best_score)


def _first_beams(b: int, k: int, bos: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scores [B, k], next tokens [B * k] and history [B, k, 0] before the first step: one live
    beam per sentence (the others are copies of it, scored -inf so they never win)."""
    scores = torch.full((b, k), float("-inf"), device=device)
    scores[:, 0] = 0.0
    return scores, torch.full((b * k,), bos, dtype=torch.long, device=device), \
        torch.zeros(b, k, 0, dtype=torch.long, device=device)


def beam_search(step: Step, state: Any, memory: Any, batch: int, beam_size: int, *, bos: int, eos: int, pad: int,
                max_len: int | torch.Tensor, forbidden: Sequence[int] = (), length_penalty: float = 0.0,
                reorder: Callable[[Any, torch.Tensor], Any] = select_rows, device: torch.device | None = None,
                ) -> torch.Tensor:
    """The best of k beams per sentence by log-probability / length ** `length_penalty`.

    `state` and `memory` hold B * k rows (`repeat_rows`).  Each step extends the k
    live beams of a sentence by their 2k best continuations: those ending in EOS
    among the k best are finished hypotheses (the sentence keeps its best), the k best
    others stay live.  A sentence is done when its best finished score beats what its
    best live beam scores now (exact for `length_penalty` 0, where scores only fall;
    the usual heuristic otherwise), or at its `max_len`, where live beams end as they
    are.  With k = 1 this is exactly greedy search.
    """
    b, k = batch, beam_size
    device = device or torch.device("cpu")
    limits = _limits(max_len, b, device)
    sentence = torch.arange(b, device=device)
    scores, tokens, history = _first_beams(b, k, bos, device)
    best_score = torch.full((b,), float("-inf"), device=device)
    best = torch.zeros(b, 0, dtype=torch.long, device=device)
    done = torch.zeros(b, dtype=torch.bool, device=device)
    for t in range(int(limits.max())):
        norm = float(t + 1) ** length_penalty
        logits, state = step(tokens, state, memory)
        logp = _forbid(logits, forbidden).log_softmax(dim=1)
        v = logp.shape[1]
        total = (scores.view(b * k, 1) + logp).view(b, k * v)
        top, flat = total.topk(min(2 * k, k * v), dim=1)  # [B, 2k]
        cand_token, cand_beam = flat % v, torch.div(flat, v, rounding_mode="floor")
        is_eos = cand_token == eos
        best = torch.cat([best, torch.full((b, 1), pad, dtype=torch.long, device=device)], dim=1)

        # Finished hypotheses: EOS among the k best continuations.
        ranked = torch.arange(top.shape[1], device=device)[None, :] < k
        finished = torch.where(is_eos & ranked, top / norm, torch.full_like(top, float("-inf")))
        cand_score, cand = finished.max(dim=1)
        ended = torch.cat([history[sentence, cand_beam[sentence, cand]],
                           torch.full((b, 1), eos, dtype=torch.long, device=device)], 1)
        best, best_score = _keep_better((cand_score > best_score) & ~done, ended, cand_score, best, best_score)

        # Live beams: the k best continuations that are not EOS.
        live = torch.where(is_eos, torch.full_like(top, float("-inf")), top)
        scores, pick = live.topk(k, dim=1)
        parent = cand_beam.gather(1, pick)  # [B, k] beam index within the sentence
        tokens = cand_token.gather(1, pick)
        history = torch.cat([history.gather(1, parent[:, :, None].expand(-1, -1, t)), tokens[:, :, None]], dim=2)
        tokens = tokens.view(b * k)
        state = reorder(state, (parent + sentence[:, None] * k).view(b * k))

        # Sentences at their limit end with their live beams as they are.
        at_limit = (limits <= t + 1) & ~done
        if bool(at_limit.any()):
            live_score, live_best = (scores / norm).max(dim=1)
            best, best_score = _keep_better(at_limit & (live_score > best_score), history[sentence, live_best],
                                            live_score, best, best_score)
        done = done | at_limit | (best_score >= scores[:, 0] / norm)
        if bool(done.all()):
            break
    return _trim(best, pad)
