from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from evolve_ai.core.backoff import restart_delay, should_disable


def test_delay_doubles_from_initial_to_the_ceiling() -> None:
    assert [restart_delay(n, 0.5, 3.0) for n in range(6)] == [0.0, 0.5, 1.0, 2.0, 3.0, 3.0]


@given(st.integers(1, 10**9), st.floats(0.001, 100), st.floats(0.001, 1000))
def test_delay_is_bounded_and_monotonic(crashes: int, initial: float, ceiling: float) -> None:
    delay = restart_delay(crashes, initial, ceiling)
    assert 0 < delay <= max(ceiling, 0)
    assert restart_delay(crashes + 1, initial, ceiling) >= delay


def test_disable_after_max_restarts() -> None:
    assert not should_disable(3, 3)
    assert should_disable(4, 3)
    assert should_disable(1, 0)
