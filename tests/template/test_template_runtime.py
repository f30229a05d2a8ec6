"""The template's runtime, run as a real agent process speaking the protocol."""

import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import msgpack
import xxhash
from agent import genetics
from tests.template.template_helpers import converse, evolvable_genes, line

from evolve_ai.environments.families import make_task

MakeAgent = Callable[..., Path]

GENUINE = [
    "arithmetic.constant_difference",
    "geometric.constant_ratio",
    "geometric.rational_ratio",
    "interleaved.two_arithmetic",
    "learner.learned_recurrence",
    "periodic.shortest_period",
    "polynomial.cubic",
    "recurrence.fibonacci_like",
    "recurrence.linear_order2",
]
HANDLED = (
    "arithmetic",
    "geometric",
    "geometric_fraction",
    "quadratic",
    "cubic",
    "fibonacci",
    "recurrence2",
    "affine",
    "recurrence3",
    "periodic",
    "interleaved",
)


def task(task_id: object, data: object) -> bytes:
    return line({"type": "task", "id": task_id, "data": data})


def test_hello_carries_the_genome_hash(make_agent: MakeAgent) -> None:
    agent = make_agent(GENUINE)
    talk = converse(agent, [])
    assert talk.returncode == 0
    expected = xxhash.xxh3_128_hexdigest((agent / "genome.bin").read_bytes())
    assert talk.messages == [{"type": "hello", "genome_hash": expected}]


def test_answers_the_families_its_genes_solve(make_agent: MakeAgent) -> None:
    rng = random.Random(1)
    tasks = [make_task(rng, HANDLED) for _ in range(200)]
    talk = converse(make_agent(GENUINE), [task(i, list(t.terms)) for i, t in enumerate(tasks)])
    assert talk.returncode == 0
    assert talk.answers() == {i: t.answer for i, t in enumerate(tasks)}
    assert "Traceback" not in talk.stderr


def test_string_ids_and_unanswerable_tasks(make_agent: MakeAgent) -> None:
    talk = converse(
        make_agent(["arithmetic.constant_difference"]),
        [task("a-1", [1, 2, 3, 4, 5, 6]), task("a-2", [3, 1, 4, 1, 5, 9])],
    )
    assert talk.answers() == {"a-1": 7, "a-2": None}


def test_first_answer_in_registry_order_wins(make_agent: MakeAgent) -> None:
    decoy_first = ["heuristics.repeat_last", "arithmetic.constant_difference"]
    talk = converse(make_agent(decoy_first), [task(1, [2, 4, 6, 8, 10, 12])])
    assert talk.answers() == {1: 12}


def test_garbage_is_ignored(make_agent: MakeAgent) -> None:
    garbage = [
        b"\n",
        b"not json\n",
        b"\xff\xfe\x00binary\n",
        b"[1, 2, 3]\n",
        b'"a string"\n',
        b'{"no": "type"}\n',
        b'{"type": 42}\n',
        b'{"type": "unknown"}\n',
        b'{"type": "task", "data": [1, 2, 3, 4]}\n',  # no id: nothing to answer
        b'{"type": "task", "id": true, "data": [1, 2, 3, 4]}\n',
        b'{"type": "task", "id": [1], "data": [1, 2, 3, 4]}\n',
        b'{"type": "feedback", "fitness": "high"}\n',
        b'{"type": "feedback", "fitness": NaN}\n',
        b'{"type": "feedback"}\n',
        b"[" * 100_000 + b"\n",  # nesting deep enough to exhaust the parser
        b'{"type": "task", "id": 9, "data": [' + b"9" * 5000 + b"]}\n",  # int too long to parse
        b'{"type": "task", "id": 8, "data": "' + b"x" * (2 << 20) + b'"}\n',  # overlong line
    ]
    tail = [task(1, [1, 2, 3, 4, 5, 6])]
    talk = converse(make_agent(GENUINE), [*garbage, *tail])
    assert talk.returncode == 0
    assert talk.messages[0]["type"] == "hello"
    assert talk.messages[1:] == [{"type": "answer", "id": 1, "value": 7}]
    assert "Traceback" not in talk.stderr


def test_bad_task_data_gets_a_null_answer(make_agent: MakeAgent) -> None:
    bad = ["12345", [1, 2, "3"], [1.0, 2.0, 3.0], [True, False, True], {"a": 1}, list(range(300))]
    talk = converse(make_agent(GENUINE), [task(i, data) for i, data in enumerate(bad)])
    assert talk.answers() == dict.fromkeys(range(len(bad)))


def test_stop_exits_at_once(make_agent: MakeAgent) -> None:
    lines = [task(1, [1, 2, 3, 4, 5, 6]), line({"type": "stop"}), task(2, [1, 2, 3, 4, 5, 6])]
    talk = converse(make_agent(GENUINE), lines)
    assert talk.returncode == 0
    assert talk.answers() == {1: 7}


def test_end_of_input_exits_zero_even_mid_line(make_agent: MakeAgent) -> None:
    talk = converse(make_agent(GENUINE), [task(1, [1, 2, 3, 4, 5, 6]), b'{"type": "ta'])
    assert talk.returncode == 0
    assert talk.answers() == {1: 7}


def test_a_raising_strategy_counts_as_no_answer(make_agent: MakeAgent) -> None:
    broken = 'def explode(terms: list[int]) -> int | None:\n    raise RuntimeError("boom")\n'
    agent = make_agent(
        ["broken.explode", "arithmetic.constant_difference"], extra_modules={"broken": broken}
    )
    talk = converse(agent, [task(i, [i, 2 * i, 3 * i, 4 * i]) for i in range(1, 6)])
    assert talk.returncode == 0
    assert talk.answers() == {i: 5 * i for i in range(1, 6)}
    assert talk.stderr.count("broken.explode failed: RuntimeError: boom") == 1


def test_a_strategy_returning_junk_counts_as_no_answer(make_agent: MakeAgent) -> None:
    junk = (
        "def text(terms: list[int]) -> object:\n    return 'seven'\n"
        "def truth(terms: list[int]) -> object:\n    return True\n"
        "def huge(terms: list[int]) -> object:\n    return 2 ** 70\n"
        "def mutate(terms: list[int]) -> object:\n    terms.clear()\n    return None\n"
    )
    genes = ["junk.text", "junk.truth", "junk.huge", "junk.mutate", "polynomial.cubic"]
    talk = converse(make_agent(genes, extra_modules={"junk": junk}), [task(1, [1, 4, 9, 16, 25])])
    assert talk.answers() == {1: 36}


def test_feedback_drives_mutation(make_agent: MakeAgent, tmp_path: Path) -> None:
    commons = tmp_path / "commons"
    commons.mkdir()
    catalogue = {"files": [{"path": "src/agent/arithmetic.py", "functions": ["newcomer"]}]}
    (commons / genetics.CATALOGUE_FILE).write_bytes(msgpack.packb(catalogue, use_bin_type=True))
    agent = make_agent(GENUINE)
    before = genetics.read_genome(agent / "genome.bin")
    # The policy acts on the mean of its default patience's worth of feedbacks.
    patience = genetics.Policy(agent / "genome.bin", commons, random.Random(0)).patience
    feedback = [line({"type": "feedback", "fitness": 0.5}) for _ in range(patience)]
    talk = converse(agent, [*feedback, task(1, [1, 2, 3, 4, 5, 6])], commons=commons)
    assert [m["type"] for m in talk.messages] == ["hello", "mutated", "answer"]
    after = genetics.read_genome(agent / "genome.bin")
    assert before is not None
    assert after is not None
    assert after["mutations"] == 1
    assert genetics.changes(before, after)
    assert (
        "newcomer"
        in next(f for f in after["files"] if f["path"].endswith("arithmetic.py"))["functions"]
    )
    assert sorted(p.name for p in agent.iterdir()) == ["genome.bin", "pyproject.toml", "src"]


def test_runs_without_genome_or_commons(make_agent: MakeAgent) -> None:
    agent = make_agent(GENUINE)
    (agent / "genome.bin").unlink()
    patience = genetics.Policy(agent / "genome.bin", None, random.Random(0)).patience
    feedback = [line({"type": "feedback", "fitness": 0.5}) for _ in range(2 * patience)]
    talk = converse(agent, [*feedback, task(1, [2, 4, 8, 16])])
    assert talk.returncode == 0
    assert talk.messages == [
        {"type": "hello", "genome_hash": ""},
        {"type": "answer", "id": 1, "value": 32},
    ]
    assert not (agent / "genome.bin").exists()


def test_exits_quietly_when_nobody_reads(make_agent: MakeAgent) -> None:
    agent = make_agent(GENUINE)
    process = subprocess.Popen(
        [sys.executable, "-m", "agent.main"],
        cwd=agent,
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": "src"},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    assert json.loads(process.stdout.readline())["type"] == "hello"
    process.stdout.close()
    _, stderr = process.communicate(b"".join(task(i, [1, 2, 3]) for i in range(100)), timeout=15)
    assert process.returncode == 0
    assert b"Traceback" not in stderr
    assert b"Exception ignored" not in stderr


def test_every_gene_wired_at_once(make_agent: MakeAgent) -> None:
    # The whole template, decoys included, imports and answers.
    rng = random.Random(2)
    tasks = [make_task(rng) for _ in range(100)]
    talk = converse(
        make_agent(evolvable_genes()), [task(i, list(t.terms)) for i, t in enumerate(tasks)]
    )
    assert talk.returncode == 0
    assert all(v is None or type(v) is int for v in talk.answers().values())
    assert len(talk.answers()) == len(tasks)
