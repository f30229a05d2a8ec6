"""Restart policy for crashed agents: a pure function of the crash count."""

from __future__ import annotations


def restart_delay(crashes: int, initial: float, ceiling: float) -> float:
    """Seconds to wait before restarting after the ``crashes``-th consecutive crash.

    ``initial`` after the first crash, doubling each time, never above ``ceiling``.
    """
    if crashes < 1:
        return 0.0
    # Cap the exponent so that huge crash counts cannot overflow a float.
    return float(min(ceiling, initial * 2.0 ** min(crashes - 1, 64)))


def should_disable(crashes: int, max_restarts: int) -> bool:
    """True once an agent has crashed more times in a row than it may be restarted."""
    return crashes > max_restarts
