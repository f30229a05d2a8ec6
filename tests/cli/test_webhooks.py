"""Webhooks to a real HTTP receiver on loopback that verifies every signature with the
``standardwebhooks`` library, fails at first, goes down, and outlives a kill -9 of the
life cycle: nothing accepted is lost, ids stay unique after dedupe."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from evolve_ai.testing import (
    FAST_SETTINGS,
    init_workspace,
    read_events,
    run_evolve,
    set_config,
    start_life_cycle,
    stop_life_cycle,
    wait_until,
)
from tests.helpers import free_port

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class Receiver:
    """An HTTP endpoint that checks signatures, can fail its first N requests, and can
    be taken down and brought back on the same port."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.requests = 0
        self.bad_signatures = 0
        self.received: list[tuple[str, dict[str, Any]]] = []  # (message id, payload)
        self.lock = threading.Lock()
        self.port = free_port()
        self.server: ThreadingHTTPServer | None = None
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"])).decode()
                with receiver.lock:
                    receiver.requests += 1
                    failing = receiver.requests <= receiver.fail_first
                    try:
                        payload = Webhook(SECRET).verify(body, dict(self.headers.items()))
                    except WebhookVerificationError:
                        receiver.bad_signatures += 1
                        failing = True
                    if not failing:
                        receiver.received.append((self.headers["webhook-id"], payload))
                self.send_response(500 if failing else 204)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()
        self.server = None

    def generations(self) -> set[int]:
        with self.lock:
            return {int(p["data"]["generation"]) for _, p in self.received
                    if p["type"] == "generation"}

    def ids(self) -> list[str]:
        with self.lock:
            return [i for i, _ in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver(fail_first=3)
    yield made
    if made.server is not None:
        made.down()


def _report(root: Path) -> dict[str, Any]:
    result = run_evolve(root, "webhooks", "--json")
    assert result.returncode == 0, result.stderr
    [row] = [r for r in json.loads(result.stdout) if r["configured"]]
    report: dict[str, Any] = row
    return report


def test_nothing_accepted_is_lost(tmp_path: Path, receiver: Receiver) -> None:
    root = init_workspace(tmp_path / "ws", 4, seed=6, settings={
        **FAST_SETTINGS, "selection.every": 2,
        "webhooks": [{"url": receiver.url, "secret": SECRET, "events": ["generation"],
                      "timeout": 2.0}]})
    proc = start_life_cycle(root)
    try:
        wait_until(lambda: len(receiver.generations()) >= 2, 60, "two generations received")
        receiver.down()  # the life cycle goes on: its events wait in the outbox
        wait_until(lambda: _report(root)["backlog"] >= 2, 60, "a backlog while it is down")
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    stuck = _report(root)
    assert stuck["last_error"] and stuck["backlog"] >= 2
    receiver.up()
    # Again, without new generations: the backlog is all there is to deliver.
    set_config(root, {"selection.every": 100000})
    proc = start_life_cycle(root)
    try:
        wait_until(lambda: _report(root)["backlog"] == 0, 90, "the backlog delivered")
    finally:
        stop_life_cycle(proc)
    assert receiver.bad_signatures == 0
    assert receiver.requests > len(receiver.ids())  # its first failures were retried
    logged = {int(e["generation"]) for e in read_events(root, "generation")}
    assert logged and logged <= receiver.generations()  # every one accepted, delivered
    deduped = dict(receiver.received)  # a message sent again keeps its id
    assert len({json.dumps(p, sort_keys=True) for p in deduped.values()}) == len(deduped)
    report = _report(root)
    assert report["delivered"] >= len(deduped) and report["dropped"] == 0


def test_a_dead_endpoint_drops_old_events_and_slows_no_pass(tmp_path: Path) -> None:
    dead, metrics = free_port(), free_port()  # nobody listens on dead
    root = init_workspace(tmp_path / "ws", 3, seed=6, settings={
        **FAST_SETTINGS, "selection.every": 2, "metrics.listen": f"127.0.0.1:{metrics}",
        "webhooks": [{"url": f"http://127.0.0.1:{dead}/?key=secret", "secret": SECRET,
                      "events": ["*"], "max_age": 1.0}]})
    proc = start_life_cycle(root)
    try:
        wait_until(lambda: _report(root)["dropped"] > 0, 60, "a dropped event")

        def exposed() -> bool:  # the backlog and the drops, in the metrics
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics") as answer:
                text = answer.read().decode()
            label = f'endpoint="http://127.0.0.1:{dead}/"'  # no query, no secret in it
            return (f"evolve_webhook_dropped{{{label}}}" in text and "key=secret" not in text
                    and f"evolve_webhook_backlog{{{label}}}" in text)

        wait_until(exposed, 30, "webhook figures in /metrics")
    finally:
        stop_life_cycle(proc)
    dropped = read_events(root, "webhook_dropped")
    assert dropped and dropped[0]["endpoint"].startswith(f"http://127.0.0.1:{dead}/")
    seconds = [e["seconds"] for e in read_events(root, "pass_done")]
    assert seconds and max(seconds) < 2.0  # a pass never waited for a delivery


def test_bad_webhook_settings_are_refused(tmp_path: Path) -> None:
    root = init_workspace(tmp_path / "ws", 1)
    for table, message in (({"url": "ftp://x", "secret": SECRET}, "url"),
                           ({"url": "http://127.0.0.1:1/", "secret": "plain"}, "secret"),
                           ({"url": "http://127.0.0.1:1/", "secret": SECRET,
                             "events": []}, "events"),
                           ({"url": "http://127.0.0.1:1/", "secret": SECRET,
                             "colour": "red"}, "unknown key")):
        set_config(root, {"webhooks": [table]})
        result = run_evolve(root, "webhooks")
        assert result.returncode == 1, result.stdout
        assert message in result.stderr and "webhooks[0]" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_per_agent_events_can_come_in_batches(tmp_path: Path) -> None:
    """batch = N: up to N waiting events in one signed message, each with its own id."""
    receiver = Receiver()
    try:
        root = init_workspace(tmp_path / "ws", 6, seed=6, settings={
            **FAST_SETTINGS, "selection.every": 2,
            "webhooks": [{"url": receiver.url, "secret": SECRET, "events": ["*"],
                          "batch": 50}]})
        proc = start_life_cycle(root)
        try:
            def a_full_batch() -> bool:
                with receiver.lock:
                    return any(p["type"] == "batch" and len(p["data"]["events"]) > 1
                               for _, p in receiver.received)

            wait_until(a_full_batch, 60, "a batch of several events")
        finally:
            stop_life_cycle(proc)
        assert receiver.bad_signatures == 0
        with receiver.lock:
            batches = [p for _, p in receiver.received]
        assert all(p["type"] == "batch" and 1 <= len(p["data"]["events"]) <= 50
                   for p in batches)
        ids = [e["id"] for p in batches for e in p["data"]["events"]]
        assert len(ids) == len(set(ids))  # one id per event
        kinds = {e["type"] for p in batches for e in p["data"]["events"]}
        assert {"life_cycle_started", "started"} <= kinds
    finally:
        receiver.down()


def _thread_switches(pid: int, name: str) -> int:
    """Voluntary context switches of ``pid``'s thread named ``name`` in the kernel."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        if (task / "comm").read_text().strip() == name:
            status = (task / "status").read_text()
            return int(status.split("voluntary_ctxt_switches:")[1].split()[0])
    raise AssertionError(f"no thread named {name} in {pid}")


def test_an_idle_sender_sleeps_until_a_pass_has_something_for_it(tmp_path: Path) -> None:
    """Between passes with nothing to send, the endpoint's thread never wakes (no
    polling of the store), and it wakes as soon as a pass saves an event it wants."""
    receiver = Receiver()
    try:
        root = init_workspace(tmp_path / "ws", 3, seed=6, settings={
            **FAST_SETTINGS, "selection.every": 100000,
            "webhooks": [{"url": receiver.url, "secret": SECRET,
                          "events": ["config_reloaded"]}]})
        proc = start_life_cycle(root)
        try:
            wait_until(lambda: len(read_events(root, "pass_done")) >= 3, 60, "three passes")
            before = _thread_switches(proc.pid, "webhook-0")
            passes = len(read_events(root, "pass_done"))
            time.sleep(3.0)  # a window of several passes (a poller would wake 3 times)
            assert len(read_events(root, "pass_done")) > passes + 2
            assert _thread_switches(proc.pid, "webhook-0") == before  # it slept throughout
            set_config(root, {"selection.every": 99999})
            proc.send_signal(signal.SIGHUP)  # a config_reloaded event: it wakes and sends
            wait_until(lambda: any(p["type"] == "config_reloaded" for _, p in receiver.received),
                       30, "the reload delivered")
        finally:
            stop_life_cycle(proc)
    finally:
        receiver.down()
