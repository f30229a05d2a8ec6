"""The template's inventor: from the tasks no gene answers to a proposal the
orchestrator's vetting accepts; silent until the orchestrator says it listens."""

import random
from collections.abc import Callable
from pathlib import Path

from agent.inventor import Inventor
from tests.template.template_helpers import converse, line

from evolve_ai.core.vetting import vet
from evolve_ai.environments.families import make_task

MakeAgent = Callable[..., Path]


def unanswered(family: str, count: int, seed: int = 1) -> list[list[int]]:
    rng = random.Random(seed)
    return [list(make_task(rng, [family]).terms) for _ in range(count)]


def test_collatz_is_found_from_the_tasks_it_failed() -> None:
    inventor = Inventor(every=1)
    for terms in unanswered("collatz", 6) + unanswered("primes_offset", 10):
        inventor.remember(terms)
    found = inventor.tick()
    assert found is not None
    name, source = found
    assert name.startswith("parity_rule_")
    vetted = vet(source)  # what the orchestrator will check first
    assert vetted.functions == ("parity_rule",)
    assert "a // 2" in source and "3 * a + 1" in source
    assert inventor.tick() is None  # the same rule is proposed once


def test_nothing_is_invented_from_noise_or_too_few_tasks() -> None:
    inventor = Inventor(every=1)
    for terms in unanswered("collatz", 2):
        inventor.remember(terms)
    assert inventor.tick() is None  # two tasks are not enough to tell a rule
    noisy = Inventor(every=1)
    for terms in unanswered("noise", 40):
        noisy.remember(terms)
    assert noisy.tick() is None


def test_it_searches_every_n_feedbacks_only() -> None:
    inventor = Inventor(every=3)
    for terms in unanswered("collatz", 6):
        inventor.remember(terms)
    assert [inventor.tick() is not None for _ in range(3)] == [False, False, True]


def task(number: int, terms: list[int]) -> bytes:
    return line({"type": "task", "id": number, "data": terms})


def test_an_agent_proposes_only_once_told_that_proposals_are_heard(
        make_agent: MakeAgent) -> None:
    agent = make_agent(["arithmetic.constant_difference"])  # no answer to collatz
    tasks = [task(i, terms) for i, terms in enumerate(unanswered("collatz", 8))]
    feedback = line({"type": "feedback", "fitness": 0.1})
    silent = converse(agent, [*tasks, feedback])
    assert not [m for m in silent.messages if m["type"] == "propose"]
    told = converse(agent, [line({"type": "innovation", "enabled": True, "every": 1}),
                            *tasks, feedback])
    [proposal] = [m for m in told.messages if m["type"] == "propose"]
    assert proposal["name"].startswith("parity_rule_")
    assert vet(proposal["source"]).functions == ("parity_rule",)
    assert "Traceback" not in told.stderr
