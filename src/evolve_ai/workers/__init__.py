"""Chunk workers: plain functions of picklable arguments, run on the process pool."""

import signal


def ignore_interrupts() -> None:
    """Pool initializer: Ctrl-C reaches the whole foreground process group; the
    orchestrator stops the pool itself, so a worker must not die with a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
