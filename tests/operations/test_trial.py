"""Trials run code in the agents' sandbox through a real fork server: answers come back,
and whatever the code does (loop, fork, flood, allocate, crash) ends with the trial."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from evolve_ai.operations.trial import TrialFailed, Trials
from evolve_ai.services import config as config_service
from evolve_ai.services.workspace import resolve_root
from evolve_ai.testing import init_workspace

GENE = "agent.candidate:guess"


@pytest.fixture
def trials(tmp_path: Path) -> Iterator[Trials]:
    root = init_workspace(tmp_path / "ws", 1, seed=1)
    workspace = resolve_root(str(root))
    made = Trials(workspace, config_service.load(workspace.config_path))
    yield made
    made.close()


def descendants() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True)
            if "multiprocessing" not in " ".join(p.cmdline() or [])]


def tried(trials: Trials, source: str, seconds: float = 3.0) -> list[object]:
    outcome = trials.run({"candidate.py": source.encode()}, [GENE],
                         [[1, 2, 3], [2, 4, 6], [5]], seconds)
    assert list(outcome.answers) == [GENE]
    return list(outcome.answers[GENE])


def test_a_module_on_trial_answers_every_task(trials: Trials) -> None:
    source = "def guess(terms):\n    return 2 * terms[-1] - terms[-2] if len(terms) > 1 else None\n"
    assert tried(trials, source) == [4, 8, None]
    broken = "def guess(terms):\n    return terms[99]\n"  # raises: no answer, no failure
    assert tried(trials, broken) == [None, None, None]
    outcome = trials.run({"candidate.py": b"raise SystemError('at import')\n"}, [GENE],
                         [[1]], 3.0)
    assert outcome.answers[GENE] == [None] and "SystemError" in outcome.errors[GENE]


def test_a_loop_that_never_ends_costs_the_deadline_only(trials: Trials) -> None:
    spin = "def guess(terms):\n    while True:\n        pass\n"
    assert tried(trials, spin) == [None, None, None]  # each call cut at 0.1 s: no answer
    started = time.monotonic()
    deaf = "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\n" + spin
    with pytest.raises(TrialFailed, match="no answer within 1 s"):  # the deadline still
        tried(trials, deaf, seconds=1.0)
    assert time.monotonic() - started < 5.0
    assert [p for p in descendants() if "forkserver" not in " ".join(p.cmdline())] == []


def test_what_the_code_forks_dies_with_the_trial(trials: Trials, tmp_path: Path) -> None:
    marker = tmp_path / "escaped"
    source = ("import os, time\n"
              "def guess(terms):\n"
              "    if os.fork() == 0:\n"
              "        os.setsid()\n"  # a session of its own: out of the trial's group
              "        time.sleep(3)\n"
              f"        open({str(marker)!r}, 'w').write('alive')\n"
              "        os._exit(0)\n"
              "    return 1\n")
    tried(trials, source)
    time.sleep(4)
    assert not marker.exists()  # the pid namespace (or the group) took it down


def test_a_flood_or_an_allocation_is_bounded(trials: Trials) -> None:
    noise = ("import sys\ndef guess(terms):\n"
             "    sys.stdout.write('x' * (1 << 20))\n    return 1\n")
    assert tried(trials, noise) == [1, 1, 1]  # 3 MB of noise: the runner's line is last
    flood = noise.replace("1 << 20", "1 << 22")
    with pytest.raises(TrialFailed, match="over 8388608 bytes"):  # 12 MB: cut short
        tried(trials, flood)
    hog = "def guess(terms):\n    return len([0] * (10 ** 10))\n"  # past RLIMIT_AS
    assert tried(trials, hog) == [None, None, None]
