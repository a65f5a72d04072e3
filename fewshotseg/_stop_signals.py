"""SIGINT and SIGTERM during training: a request to stop at the next step boundary.

`fewshotseg.training.Trainer.fit` saves a checkpoint there and raises
`fewshotseg.training.TrainingInterrupted`, so the saved state is exact and a rerun resumes it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave SIGINT/SIGTERM to the main process, which stops between steps.

    ``kill`` of a process group, ``timeout`` and SLURM signal the workers too; a worker that died
    of it would fail the main process before it could save. Workers still exit with their parent.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


@contextlib.contextmanager
def stop_requests() -> Iterator[list[int]]:
    """Turn SIGINT/SIGTERM into a request that the loop honours between steps.

    Stopping between steps (not mid optimiser update) makes the saved checkpoint exact; schedulers
    such as SLURM send SIGTERM before killing a job. A second signal gets the previous handler
    (a second Ctrl-C interrupts at once). Signals that were ignored (``nohup``, background jobs)
    stay ignored, and nothing is installed outside the main thread, where Python forbids it.
    """
    requested: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return
    previous = {}

    def on_signal(signum: int, frame: Any) -> None:
        requested.append(signum)
        signal.signal(signum, previous[signum])  # a second signal acts as it did before

    for sig in (signal.SIGINT, signal.SIGTERM):
        current = signal.getsignal(sig)
        if current in (signal.SIG_IGN, None):
            continue
        previous[sig] = current
        signal.signal(sig, on_signal)
    try:
        yield requested
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
