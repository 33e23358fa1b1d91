"""Weight drop keeps the fused LSTM kernel: training steps/s of the language model with and
without DropConnect on the hidden-to-hidden weights, alternated (a shared machine is noisy).

    python scripts/lm_weight_drop_speed.py [--steps 20] [--repeats 3] [--hidden 512] [--bf16]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from lstm_train.models.language_model import LanguageModel


def steps_per_s(weight_drop: float, args: argparse.Namespace) -> float:
    torch.manual_seed(0)
    model = LanguageModel(65, 128, args.hidden, 2, 0.2, weight_drop=weight_drop)
    opt = torch.optim.AdamW(model.parameters(), 2e-3)
    x, y = torch.randint(0, 65, (32, 128)), torch.randint(0, 65, (32, 128))
    for i in range(args.steps + 2):
        if i == 2:
            start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            loss = F.cross_entropy(model(x)[0].flatten(0, 1).float(), y.flatten())
        loss.backward()
        opt.step()
        opt.zero_grad()
    return args.steps / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--bf16", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    runs: dict[float, list[float]] = {0.0: [], 0.5: []}
    for _ in range(args.repeats):
        for p_drop in runs:
            runs[p_drop].append(steps_per_s(p_drop, args))
    plain, dropped = statistics.median(runs[0.0]), statistics.median(runs[0.5])
    print(f"steps/s without weight drop {plain:.3f}, with weight drop 0.5 {dropped:.3f}: ratio {dropped / plain:.3f}")


if __name__ == "__main__":
    main()
