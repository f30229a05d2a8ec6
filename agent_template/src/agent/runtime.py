"""The agent's runtime: it speaks the orchestrator's protocol (docs/protocol.md).

Core module: always active, never a gene; `main(registry)` is the entry point that the
generated `main.py` calls with the expressed strategies. Garbage on stdin (bad JSON,
lines over MAX_LINE bytes, unknown types) is ignored: it must never kill an agent.

Dispatch: every expressed strategy is called on every task, in registry order, and the
answer is the first `answer_value` (an int, not a bool, |value| < 2**62): a decoy
expressed early shadows a good gene after it. All are called, not just those up to the
first answer, so that stateful genes (memory, learner) learn from every task. A strategy
that raises is no answer; its first failure is logged.
"""

import hashlib
import json
import os
import random
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from agent import genetics, inventor
from agent.support import LIMIT

__evolve__ = "core"

Strategy = Callable[[list[int]], int | None]

MAX_LINE = 1 << 20
MAX_TERMS = 256


class _Closed(Exception):
    """The orchestrator closed our stdout: nobody is listening any more."""


def log(text: str) -> None:
    print(f"agent: {text}", file=sys.stderr, flush=True)


def genome_hash(data: bytes | None) -> str:
    """The digest the orchestrator also computes, so it can match our hello."""
    if data is None:
        return ""
    try:
        import xxhash
    except ImportError:
        return hashlib.blake2b(data, digest_size=16).hexdigest()
    return xxhash.xxh3_128_hexdigest(data)


def read_lines(stream: BinaryIO, limit: int = MAX_LINE) -> Iterator[bytes | None]:
    """Lines of `stream` until end of input; None marks an overlong line, skipped whole.

    Reading at most `limit + 1` bytes at a time keeps a line without newline
    from filling memory.
    """
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        if line.endswith(b"\n") or len(line) <= limit:
            yield line
            continue
        while line and not line.endswith(b"\n"):
            line = stream.readline(limit + 1)
        yield None


def parse_message(line: bytes) -> dict[str, Any] | None:
    """A protocol message, or None for anything that is not one."""
    try:
        message = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if isinstance(message, dict) and isinstance(message.get("type"), str):
        return message
    return None


def task_terms(data: object) -> list[int] | None:
    """The task's terms when they are a list of at most MAX_TERMS plain ints."""
    if not isinstance(data, list) or len(data) > MAX_TERMS:
        return None
    if not all(type(term) is int for term in data):
        return None
    return data


def answer_value(value: object) -> int | None:
    """A strategy's result when it is a usable answer, else None."""
    if type(value) is int and -LIMIT < value < LIMIT:
        return value
    return None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so interpreter shutdown does not flush into a dead pipe."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError):
        pass


class Agent:
    """One running agent: its strategies, its genetics, its output channel."""

    def __init__(
        self,
        registry: Mapping[str, Strategy],
        policy: genetics.Policy,
        output: TextIO,
    ) -> None:
        self.strategies = [(name, fn) for name, fn in registry.items() if callable(fn)]
        self.policy = policy
        self.output = output
        self.failed: set[str] = set()
        self.inventor: inventor.Inventor | None = None  # once told proposals are heard

    def send(self, message: Mapping[str, object]) -> None:
        try:
            self.output.write(json.dumps(message, separators=(",", ":")) + "\n")
            self.output.flush()
        except (OSError, ValueError) as error:
            raise _Closed from error

    def dispatch(self, terms: list[int]) -> int | None:
        """The first usable answer in registry order; every strategy sees the task."""
        answer: int | None = None
        for name, strategy in self.strategies:
            value = self._call(name, strategy, terms)
            if answer is None:
                answer = value
        return answer

    def _call(self, name: str, strategy: Strategy, terms: list[int]) -> int | None:
        try:
            # A copy each: a strategy that edits its input cannot corrupt the next.
            return answer_value(strategy(list(terms)))
        except Exception as error:
            if name not in self.failed:
                self.failed.add(name)
                log(f"strategy {name} failed: {type(error).__name__}: {error!s:.200}")
            return None

    def on_task(self, message: Mapping[str, Any]) -> None:
        task_id = message.get("id")
        if isinstance(task_id, bool) or not isinstance(task_id, int | str):
            return
        terms = task_terms(message.get("data"))
        value = None if terms is None else self.dispatch(terms)
        self.send({"type": "answer", "id": task_id, "value": value})
        if value is None and terms is not None and self.inventor is not None:
            self.inventor.remember(terms)

    def on_feedback(self, message: Mapping[str, Any]) -> None:
        fitness = _number(message.get("fitness"))
        if fitness is None:
            return
        try:
            rewritten = self.policy.observe(fitness)
        except Exception as error:
            # Failing genetics (a full disk, say) must not stop the agent answering.
            log(f"genetics failed: {type(error).__name__}: {error!s:.200}")
            return
        if rewritten:
            self.send({"type": "mutated"})
        if self.inventor is not None:
            try:
                proposal = self.inventor.tick()
            except Exception as error:
                log(f"inventor failed: {type(error).__name__}: {error!s:.200}")
                self.inventor = None
                return
            if proposal is not None:
                self.send({"type": "propose", "name": proposal[0], "source": proposal[1]})

    def on_innovation(self, message: Mapping[str, Any]) -> None:
        """The orchestrator hears proposals: invent every `every` feedbacks."""
        every = message.get("every")
        if message.get("enabled") and type(every) is int and every > 0:
            self.inventor = inventor.Inventor(every)
        else:
            self.inventor = None

    def handle(self, message: Mapping[str, Any]) -> bool:
        """React to one message; False when the agent must stop."""
        kind = message["type"]
        if kind == "stop":
            return False
        if kind == "task":
            self.on_task(message)
        elif kind == "feedback":
            self.on_feedback(message)
        elif kind == "innovation":
            self.on_innovation(message)
        return True


def _commons() -> Path | None:
    commons = os.environ.get("EVOLVE_COMMONS")
    return Path(commons) if commons else None


def main(registry: dict[str, Strategy]) -> int:
    """Serve the protocol on stdin/stdout until `stop` or end of input."""
    genome_path = Path(genetics.GENOME_FILE)
    digest = genome_hash(genetics.read_bounded(genome_path))
    # Seeded by identity and genome: reproducible for one agent, distinct across agents.
    agent_id = os.environ.get("EVOLVE_AGENT_ID", "")
    rng = random.Random(f"{agent_id}:{digest}")
    policy = genetics.Policy(genome_path, _commons(), rng, owner=agent_id)
    agent = Agent(registry, policy, sys.stdout)
    try:
        agent.send({"type": "hello", "genome_hash": digest})
        for line in read_lines(sys.stdin.buffer):
            message = None if line is None else parse_message(line)
            if message is not None and not agent.handle(message):
                break
    except _Closed:
        _silence_stdout()
    return 0
