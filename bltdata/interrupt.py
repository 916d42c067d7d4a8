"""Stopping a training loop cleanly on SIGINT / SIGTERM, and deciding when to checkpoint.

``StopRequest`` is a context manager the CLI wraps a training run in: while it is active
the first SIGINT or SIGTERM only records the signal (the loop sees ``stop()`` turn true
after its current step, writes a checkpoint and raises :class:`TrainingInterrupted`); a
second signal interrupts at once, as Python would. Outside the main thread it installs
nothing (signal handlers can only be set there) and never asks to stop.

``CheckpointClock`` says when a periodic checkpoint is due: every ``every_steps`` steps
and/or every ``every_minutes`` minutes of wall time since the last one.
"""
from __future__ import annotations

import logging
import signal
import threading
import time

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(Exception):
    """A run stopped by a signal after saving a checkpoint (``step``, ``path``, ``signum``)."""

    def __init__(self, step: int, path, signum: int):
        self.step, self.path, self.signum = step, path, signum
        super().__init__(f"interrupted by {signal.Signals(signum).name} at step {step}; checkpoint saved in {path}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention for a process ended by a signal


class StopRequest:
    """``with StopRequest() as stop:`` … ``stop()`` is true once SIGINT/SIGTERM arrived."""

    def __init__(self, signals=SIGNALS):
        self.signals, self.signum, self._previous = tuple(signals), None, {}

    def __call__(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame):
        if self.signum is not None:  # second signal: stop now
            self._restore()
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("%s received: stopping after this step and saving a checkpoint (send again to abort)",
                    signal.Signals(signum).name)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _restore(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def __exit__(self, *exc):
        self._restore()
        return False


class CheckpointClock:
    """Due every ``every_steps`` steps (0: never by steps) or ``every_minutes`` of wall time (0: never by time)."""

    def __init__(self, every_steps: int, every_minutes: float, clock=time.monotonic):
        self.every_steps, self.every_seconds, self.clock = every_steps, every_minutes * 60.0, clock
        self.last = clock()

    def due(self, step: int) -> bool:
        by_steps = self.every_steps > 0 and step % self.every_steps == 0
        by_time = self.every_seconds > 0 and self.clock() - self.last >= self.every_seconds
        return by_steps or by_time

    def saved(self) -> None:
        self.last = self.clock()
