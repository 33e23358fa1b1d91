"""Progress on the main process: a tqdm bar on a terminal, plain lines in batch logs.

SLURM output files and CI logs are not terminals; a bar there is one endless
line of carriage returns, so they get a line every few seconds instead.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from tqdm import tqdm


class Progress:
    def __init__(self, total: int, unit: str, enabled: bool, initial: int = 0, every_s: float = 10.0) -> None:
        self.total, self.unit, self.enabled, self.every_s = total, unit, enabled, every_s
        self.tty = enabled and sys.stderr.isatty()
        self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True) if self.tty else None
        self.last_print = 0.0
        self.step = initial

    def update(self, step: int, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(step - self.step)
            self.bar.set_postfix(loss=f"{row['loss']:.4f}", **{f"{self.unit}/s": f"{row[f'{self.unit}_per_s']:.0f}"})
        elif time.monotonic() - self.last_print >= self.every_s or step == self.total:
            self.last_print = time.monotonic()
            print(
                f"step {step}/{self.total}  epoch {row['epoch']:.2f}  loss {row['loss']:.4f}  "
                f"global_loss {row['global_loss']:.4f}  {row[f'{self.unit}_per_s']:.0f} {self.unit}/s",
                file=sys.stderr,
                flush=True,
            )
        self.step = step

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
