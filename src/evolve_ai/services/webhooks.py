"""Webhook delivery: a durable outbox in the store, one sender thread per endpoint.

A pass's events become outbox messages in the pass's own transaction: what the store
accepted is delivered, at least once, across a kill -9 (each message keeps its id, so
that a receiver can drop a duplicate). Each endpoint has a thread of its own with a
store connection of its own: a slow or dead receiver delays nobody but itself, and
never a pass. Signatures follow the Standard Webhooks specification, made by its
reference library (``standardwebhooks``): headers ``webhook-id``,
``webhook-timestamp`` and ``webhook-signature`` (HMAC-SHA256). After a failed
delivery the endpoint rests (an exponential delay with jitter) before it tries its
oldest message again: a dead receiver costs one attempt per rest, not one per waiting
message. Messages older than ``max_age`` are dropped together, with a
``webhook_dropped`` event.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from standardwebhooks.webhooks import Webhook as Signer

from evolve_ai._linux import name_thread
from evolve_ai.core.records import Event
from evolve_ai.services import logs
from evolve_ai.services.config import Webhook
from evolve_ai.services.store import Store

FIRST_DELAY = 1.0  # seconds before the first retry; doubles with each failure
LONGEST_DELAY = 300.0
ERROR_DELAY = 1.0  # seconds before looking again after the store failed


def messages(endpoints: Sequence[Webhook], events: Iterable[Event]
             ) -> list[tuple[str, str, str]]:
    """The outbox rows for a pass's events: (endpoint, message id, payload)."""
    rows = []
    for event in events:
        wanted = [e for e in endpoints if e.wants(event.kind)]
        if not wanted:
            continue
        data = {"agent": event.agent, **dict(event.data)}
        data.pop("level", None)
        payload = json.dumps({"type": event.kind,
                              "timestamp": datetime.fromtimestamp(event.time, UTC).isoformat(),
                              "data": data}, default=str, sort_keys=True)
        rows += [(e.url, f"msg_{uuid.uuid4().hex}", payload) for e in wanted]
    return rows


class Deliverer:
    """The sender threads; ``notice`` after a pass saved messages, ``stop`` at the end."""

    def __init__(self, db_path: Path, endpoints: Sequence[Webhook]) -> None:
        self.db_path = db_path
        self.endpoints = tuple(endpoints)
        self.log = logs.get_logger(command="life-cycle")
        self._stop = threading.Event()
        self._wake = {e.url: threading.Event() for e in self.endpoints}
        self._threads = [threading.Thread(target=self._run, args=(e,), daemon=True,
                                          name=f"evolve-webhook-{i}")
                         for i, e in enumerate(self.endpoints)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def notice(self, saved: Iterable[Event]) -> None:
        """Wake the endpoints that want one of a pass's ``saved`` events (now in the
        outbox); the others sleep on."""
        kinds = {event.kind for event in saved}
        for endpoint in self.endpoints:
            if any(endpoint.wants(kind) for kind in kinds):
                self._wake[endpoint.url].set()

    def stop(self) -> None:
        """Let each thread finish the delivery under way (``timeout`` at most)."""
        self._stop.set()
        for event in self._wake.values():
            event.set()
        for thread, endpoint in zip(self._threads, self.endpoints, strict=True):
            thread.join(endpoint.timeout + 1.0)

    def _run(self, endpoint: Webhook) -> None:
        name_thread()
        signer = Signer(endpoint.secret)
        wake = self._wake[endpoint.url]
        try:
            store = Store.open(self.db_path)
        except Exception as error:  # the loop goes on; this endpoint waits for a restart
            self.log.error("webhook_stopped", endpoint=endpoint.url, error=str(error))
            return
        with store:
            resting_until = 0.0  # after a failure the endpoint rests: one try per delay
            while not self._stop.is_set():
                wake.clear()  # before looking: a pass that saves from now on wakes us
                if self._stop.is_set():  # stop's wake-up may be the one just cleared
                    break
                upcoming: float | None
                try:
                    if time.time() >= resting_until:
                        resting_until = self._send_due(store, endpoint, signer) or 0.0
                    upcoming = resting_until or store.outbox_next(endpoint.url)
                except Exception as error:  # a busy or damaged store: try again later
                    self.log.error("webhook_error", endpoint=endpoint.url, error=str(error))
                    upcoming = time.time() + ERROR_DELAY
                # Idle, it sleeps until a pass wakes it or a message falls due: no polling.
                if resting_until > time.time():
                    self._stop.wait(resting_until - time.time())  # a wake-up does not end a rest
                else:
                    wake.wait(None if upcoming is None else max(0.0, upcoming - time.time()))

    def _send_due(self, store: Store, endpoint: Webhook, signer: Signer) -> float | None:
        """Deliver every message due now, oldest first; None when all went, else when to
        try again (a failure stops the round)."""
        self._expire(store, endpoint, time.time())
        while due := store.outbox_due(endpoint.url, time.time()):
            for start in range(0, len(due), endpoint.batch):
                if self._stop.is_set():
                    return None
                retry_at = self._deliver(store, endpoint, signer,
                                         due[start: start + endpoint.batch])
                if retry_at is not None:
                    return retry_at
        return None

    def _expire(self, store: Store, endpoint: Webhook, now: float) -> None:
        """Messages older than ``max_age`` are dropped, all at once."""
        dropped = store.outbox_expire(endpoint.url, now - endpoint.max_age, now)
        if dropped:
            self.log.warning("webhook_dropped", endpoint=endpoint.url, count=dropped,
                             error="older than max_age")

    def _deliver(self, store: Store, endpoint: Webhook, signer: Signer,
                 batch: Sequence[tuple[int, str, str, float, int]]) -> float | None:
        """One POST: a message, or (``batch`` > 1) a ``batch`` message holding several,
        each event with its own ``id`` for the receiver to drop duplicates by. None when
        delivered; else when to try again (the messages wait, their attempts counted)."""
        now = datetime.now(UTC)
        if len(batch) == 1 and endpoint.batch == 1:
            _, msg_id, payload, _, _ = batch[0]
        else:
            msg_id = "batch_" + hashlib.sha256(
                " ".join(m[1] for m in batch).encode()).hexdigest()[:32]
            payload = json.dumps({"type": "batch", "timestamp": now.isoformat(), "data": {
                "events": [{"id": m[1], **json.loads(m[2])} for m in batch]}}, sort_keys=True)
        headers = {**dict(endpoint.headers), "content-type": "application/json",
                   "user-agent": "evolve", "webhook-id": msg_id,
                   "webhook-timestamp": str(int(now.timestamp())),
                   "webhook-signature": signer.sign(msg_id, now, payload)}
        request = urllib.request.Request(endpoint.url, data=payload.encode(),
                                         headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=endpoint.timeout) as answer:
                answer.read(1 << 16)
            store.outbox_delivered([m[0] for m in batch], endpoint.url, time.time())
            return None
        except urllib.error.HTTPError as error:
            problem = f"HTTP {error.code}"
        except (OSError, ValueError) as error:  # refused, timed out, unreachable
            problem = str(getattr(error, "reason", error))
        attempts = max(m[4] for m in batch)
        delay = min(LONGEST_DELAY, FIRST_DELAY * 2.0 ** attempts) * random.uniform(0.5, 1.5)
        retry_at = time.time() + delay
        store.outbox_failed([m[0] for m in batch], endpoint.url, problem, retry_at,
                            time.time())
        return retry_at
