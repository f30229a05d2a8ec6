from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from evolve_ai.core.records import Event
from evolve_ai.errors import ConfigError
from evolve_ai.services import logs
from evolve_ai.services.notifier import Notifier

HOOKS = '''
import json, time
from pathlib import Path

OUT = Path(__file__).with_name("seen.jsonl")

def record(event):
    with OUT.open("a") as handle:
        handle.write(json.dumps(event) + "\\n")

def explode(event):
    raise RuntimeError("hook bug")

def hang(event):
    if event["event"] == "first":
        time.sleep(3600)
'''


@pytest.fixture
def hooks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "myhooks.py").write_text(HOOKS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "myhooks", raising=False)  # each test its own output file
    logs.configure(0, "json")
    logs.attach_file(tmp_path / "evolve.jsonl")
    yield tmp_path
    logs.configure(0, "console")  # closes the file


def seen(directory: Path) -> list[str]:
    path = directory / "seen.jsonl"
    return [json.loads(line)["event"] for line in path.read_text().splitlines()] \
        if path.exists() else []


def wait_for(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.01)
    raise AssertionError("condition never met")


def logged(directory: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (directory / "evolve.jsonl").read_text().splitlines()]


def test_a_raising_hook_is_logged_and_the_others_still_run(hooks: Path) -> None:
    """Its failures are counted and said once a generation (and at the end), not once
    per event: a hook that fails at every event cannot flood the log."""
    notifier = Notifier(["myhooks:explode", "myhooks:record"], timeout=1.0)
    notifier.publish([Event("born", time.time(), "a"), Event("died", time.time(), "b")])
    wait_for(lambda: seen(hooks) == ["born", "died"])
    assert not [e for e in logged(hooks) if e["event"] == "hook_failed"]  # not yet
    notifier.publish([Event("generation", time.time(), None)])
    wait_for(lambda: seen(hooks) == ["born", "died", "generation"])
    notifier.publish([Event("generation", time.time(), None)])  # said at the next one
    wait_for(lambda: len(seen(hooks)) == 4)
    notifier.close()
    errors = [e for e in logged(hooks) if e["event"] == "hook_failed"]
    # Four failures, said at most once per generation event and once at the end.
    assert 1 <= len(errors) <= 3
    assert sum(int(str(e["count"])) for e in errors) == 4
    assert all(e["last_error"] == "RuntimeError: hook bug" for e in errors)


def test_a_hanging_hook_is_abandoned_and_events_keep_flowing(hooks: Path) -> None:
    notifier = Notifier(["myhooks:hang", "myhooks:record"], timeout=0.2)
    started = time.monotonic()
    notifier.publish([Event("first", time.time(), "a")])
    assert time.monotonic() - started < 0.1  # never blocks the loop
    time.sleep(0.4)
    notifier.publish([Event("second", time.time(), "a")])  # notices the stuck hook
    wait_for(lambda: "second" in seen(hooks))
    notifier.close()
    assert any(e["event"] == "hook_timeout" and e["hook"] == "myhooks:hang"
               for e in logged(hooks))


def test_events_are_logged_even_without_hooks(hooks: Path) -> None:
    Notifier([], timeout=1.0).publish([Event("crashed", time.time(), "x",
                                             (("returncode", -9), ("level", "warning")))])
    entry = next(e for e in logged(hooks) if e["event"] == "crashed")
    assert entry["agent"] == "x" and entry["returncode"] == -9 and entry["level"] == "warning"


def test_an_unloadable_hook_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="hook 'nomodule:fn' cannot be loaded"):
        Notifier(["nomodule:fn"], timeout=1.0)


def test_the_event_log_rolls_over_and_keeps_a_few_files(tmp_path: Path) -> None:
    """A long run writes a bounded log: evolve.jsonl and at most ``files`` older copies."""
    path = tmp_path / "evolve.jsonl"
    logs.configure(0, "json")
    logs.attach_file(path, max_bytes=4096, files=2)
    try:
        log = logs.get_logger()
        for n in range(500):
            log.debug("tick", n=n, padding="x" * 50)
    finally:
        logs.configure(0, "console")  # closes the file
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["evolve.jsonl", "evolve.jsonl.1", "evolve.jsonl.2"]
    assert all(p.stat().st_size <= 4096 + 200 for p in tmp_path.iterdir())
    last = [json.loads(line) for line in path.read_text().splitlines()][-1]
    assert last["n"] == 499  # the newest events are in the live file
