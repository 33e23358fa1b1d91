"""Stop requests: a signal sets a flag; the training loop saves and stops at its next sync point.

Shared by `lstm-train run` (SIGTERM, SIGUSR1, SIGUSR2) and the SLURM node side
(SIGTERM and submitit's timeout signal).  A handler never does work itself: ranks
receive a signal at different steps, so acting on it alone would put one rank into
a collective the others never enter.  The loop polls `StopRequest.event` only at
steps every rank shares.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any


class StopRequest:
    """Install handlers for `signums`; `event` is set by the first of them, `received`
    lists every signal seen (in order).  `restore()` puts the previous handlers back."""

    def __init__(self, *signums: int, quiet: bool = False) -> None:
        self.event = threading.Event()
        self.received: list[int] = []
        self.quiet = quiet
        self.previous: dict[int, Any] = {s: signal.getsignal(s) for s in signums}
        for s in signums:
            signal.signal(s, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.received.append(signum)
        if not self.event.is_set() and not self.quiet:
            print(f"received {signal.Signals(signum).name}: checkpointing at the next sync point",
                  file=sys.stderr, flush=True)
        self.event.set()

    def restore(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
