"""Progress display shared by `patch`, `demo`, `train` and `entropy train`.

On a terminal it is a tqdm bar, and log records are routed through the bar so that a
warning never breaks into it mid-line. Anywhere else (a pipe, a log file, CI) it prints a
plain line at each 10 % of the work and at least every 30 s, never `\\r` frames, so a
log of a long run stays a few lines. `--no-progress` turns both off.
"""
import contextlib
import logging
import os
import re
import sys
import threading
import time

import click

LINE_PERCENT_STEP = 10
LINE_SECONDS = 30.0
PROGRESS_HELP = ("Show progress on stderr: a bar on a terminal, otherwise a plain line every 10 % "
                 "and at least every 30 s.  [default: --progress]")


def progress_option(func):
    """The `--progress/--no-progress` flag every long-running command shares."""
    return click.option("--progress/--no-progress", default=True, help=PROGRESS_HELP)(func)


def display_mode(progress: bool, stream=None) -> str:
    """'bar' on a terminal, 'lines' elsewhere, 'off' when progress is not wanted."""
    if not progress:
        return "off"
    stream = stream or sys.stderr
    return "bar" if getattr(stream, "isatty", lambda: False)() else "lines"


class Progress:
    """`update(n, **postfix)` moves to n of `total`; `write(text)` prints a line beside it."""

    def __init__(self, total: float, *, desc: str, unit: str, mode: str, unit_scale: bool = False,
                 stream=None, clock=time.monotonic):
        self.total, self.desc, self.unit, self.mode, self.unit_scale = total, desc, unit, mode, unit_scale
        self.stream, self.clock = stream, clock
        self.n, self.postfix = 0, {}
        self._bar = None
        self._started = self._last_line = clock()
        self._last_step = 0  # the last multiple of LINE_PERCENT_STEP printed
        self._printed_n = None  # n shown by the last plain line
        if mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=unit_scale, dynamic_ncols=True,
                             file=stream)

    def update(self, n: float, **postfix) -> None:
        self.n = min(n, self.total) if self.total else n
        self.postfix.update(postfix)
        if self._bar is not None:
            self._bar.n = self.n
            self._bar.set_postfix(self.postfix, refresh=False)
            self._bar.refresh()
        elif self.mode == "lines":
            self._maybe_line()

    def _maybe_line(self) -> None:
        step = int(100 * self.n / self.total) // LINE_PERCENT_STEP if self.total else 0
        if step > self._last_step or self.clock() - self._last_line >= LINE_SECONDS:
            self._line()
            self._last_step = max(step, self._last_step)

    def _line(self) -> None:
        from tqdm import tqdm

        postfix = ", ".join(f"{k}={v}" for k, v in self.postfix.items())
        text = tqdm.format_meter(self.n, self.total, self.clock() - self._started, prefix=self.desc,
                                 unit=self.unit, unit_scale=self.unit_scale, postfix=postfix or None,
                                 bar_format="{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} "
                                            "[{elapsed}<{remaining}, {rate_fmt}]{postfix}")
        click.echo(text, err=self.stream is None, file=self.stream)
        self._last_line, self._printed_n = self.clock(), self.n

    def write(self, text: str) -> None:
        """A message that must not tear the bar (e.g. a held-out evaluation)."""
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        elif self.mode != "off":
            click.echo(text, err=self.stream is None, file=self.stream)

    def close(self) -> None:
        """Ends the bar; in line mode prints the last state if the last line did not."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.mode == "lines" and self._printed_n != self.n:
            self._line()
        self.mode = "off"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@contextlib.contextmanager
def shown(progress: Progress):
    """Route logging through the bar while it is drawn; close it on the way out."""
    with progress:
        if progress.mode == "bar":
            from tqdm.contrib.logging import logging_redirect_tqdm

            root = logging.getLogger()
            filters = [f for handler in root.handlers for f in handler.filters]
            before = set(root.handlers)
            with logging_redirect_tqdm(loggers=[root]):
                for handler in set(root.handlers) - before:  # keep main's filters (Beam's noise)
                    for f in filters:
                        handler.addFilter(f)
                yield progress
        else:
            yield progress


# Loggers of the libraries under `patch`: their INFO/WARNING lines (about the runner's
# workers, gRPC channels, absl flags) say nothing about the job.
NOISY_LOGGERS = ("apache_beam", "absl", "distributed", "grpc")


def verbose_option(func):
    """`-v/--verbose`: also show the runner's (Beam's, absl's, Dask's) own log lines."""
    return click.option("-v", "--verbose", is_flag=True,
                        help="Also show Beam's, absl's and Dask's log lines (hidden below ERROR otherwise).")(func)


def quiet_beam(verbose: bool) -> None:
    """Hide the runner libraries' log records below ERROR unless `verbose` (or `bltdata -v`); ours are untouched.

    Their loggers' levels are set, and a filter on the root handlers drops what gets past:
    a level does not last, since `distributed` sets its loggers to INFO when it is imported
    (after this, inside the DaskRunner run), and its LocalCluster's scheduler then logs
    ~30 INFO lines through our handlers.
    """
    verbose = verbose or logging.getLogger().getEffectiveLevel() < logging.WARNING
    level = logging.NOTSET if verbose else logging.ERROR
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(level)
    for handler in logging.getLogger().handlers:
        if verbose:
            handler.removeFilter(_noisy_below_error)
        else:
            handler.addFilter(_noisy_below_error)  # once: addFilter skips a filter already there


def _noisy_below_error(record: logging.LogRecord) -> bool:
    """False for a record of a runner library (NOISY_LOGGERS or below them) under ERROR."""
    if record.levelno >= logging.ERROR:
        return True
    return not any(record.name == name or record.name.startswith(name + ".") for name in NOISY_LOGGERS)


# A log line below ERROR as a child process (Beam's SDK worker, Dask's worker) prints it
# with its own logging set-up: "INFO:apache_beam...:", "WARNING:root:...", or Dask's
# "2026-01-01 12:00:00,000 - distributed.worker - INFO - ...".
_CHILD_LOG_LINE = re.compile(rb"^(?:(?:DEBUG|INFO|WARNING):[\w.]+:|[\d\- :,]+ - [\w.]+ - (?:DEBUG|INFO|WARNING) - )")


@contextlib.contextmanager
def child_logs_filtered(enabled: bool = True):
    """Drop the sub-ERROR log lines that child processes write to this process's stderr.

    Beam's multi-processing workers log INFO to the inherited stderr before any pipeline
    option can quiet them. While this is active, fd 2 is a pipe read by a thread that
    forwards everything else; this process's own `sys.stderr` writes go straight to the
    real stderr. Inactive when stderr is not a real file descriptor (e.g. under CliRunner).
    """
    try:
        active = enabled and sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        active = False
    if not active:
        yield
        return
    sys.stderr.flush()
    original, saved = sys.stderr, os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    direct = open(saved, "w", buffering=1, encoding=original.encoding, errors=original.errors, closefd=False)
    handlers = [h for h in logging.getLogger().handlers
                if isinstance(h, logging.StreamHandler) and h.stream is original]
    forwarder = threading.Thread(target=_forward_lines, args=(read_end, saved), name="child-stderr", daemon=True)
    forwarder.start()
    sys.stderr = direct
    for handler in handlers:
        handler.setStream(direct)
    try:
        yield
    finally:
        direct.flush()
        sys.stderr = original
        for handler in handlers:
            handler.setStream(original)
        os.dup2(saved, 2)  # closes the pipe's write end here; children that still hold it keep it open
        forwarder.join(timeout=5)
        os.close(saved)


def _forward_lines(read_end: int, target: int) -> None:
    with open(read_end, "rb") as pipe:
        for line in iter(pipe.readline, b""):
            if not _CHILD_LOG_LINE.match(line):
                try:
                    os.write(target, line)
                except OSError:  # a child outlived the command and wrote after it restored stderr
                    return
