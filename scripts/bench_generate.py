"""generate's time against the number of tokens (issue 27: linear, 1k vs 10k tokens ratio under 15).

A speed target, so it lives here and not in the tests (tests/test_trust.py asserts the structure:
each decode sees a bounded window).  Run alone on a quiet machine:
    PYTHONPATH=$PWD python scripts/bench_generate.py [--small N --large M --kind bytes] [--json]

`--json`: one JSON object on stdout (the times, the ratio and whether it is within the target),
exit 0 either way (scripts/book.py records it); without it, exit 1 when over the target.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from lstm_train.data.lm_tokenizer import Tokenizer
from lstm_train.tasks.language_model import generate


class TinyLM(torch.nn.Module):
    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.embed, self.lstm = torch.nn.Embedding(vocab, 32), torch.nn.LSTM(32, 32, batch_first=True)
        self.head = torch.nn.Linear(32, vocab)

    def forward(self, ids: torch.Tensor, state: object) -> tuple[torch.Tensor, object]:
        out, state = self.lstm(self.embed(ids), state)
        return self.head(out), state


def timed(model: torch.nn.Module, tok: Tokenizer, n: int) -> float:
    started = time.perf_counter()
    for _ in generate(model, tok, "the", n, 1.0, None, 1):
        pass
    return time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--small", type=int, default=1000)
    p.add_argument("--large", type=int, default=10000)
    p.add_argument("--kind", default="bpe", choices=["bytes", "chars", "words", "bpe"])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args()
    torch.set_num_threads(1)
    text = "the cat sat on the mat; héllo wörld.\n" * 50
    tok = Tokenizer.train(args.kind, text, text, 300)
    model = TinyLM(256 if args.kind == "bytes" else len(tok.vocab) if tok.vocab else 300).eval()
    small, large = timed(model, tok, args.small), timed(model, tok, args.large)
    ratio = large / small
    within = ratio < 1.5 * args.large / args.small
    if args.json:
        print(json.dumps({"kind": args.kind, "small_tokens": args.small, "large_tokens": args.large,
                          "small_s": round(small, 4), "large_s": round(large, 4), "ratio": round(ratio, 2),
                          "linear": round(args.large / args.small, 2), "within_target": within}))
        return
    print(f"{args.kind}: {args.small} tokens {small:.2f} s, {args.large} tokens {large:.2f} s, ratio {ratio:.1f} "
          f"(linear: {args.large / args.small:.0f}; target under 15)")
    raise SystemExit(0 if within else 1)


if __name__ == "__main__":
    main()
