"""Agents propose new genes: a useful one becomes a module of a new template version; a
hostile proposer gets every proposal rejected with a reason, its trials contained, the
life cycle unaffected and nothing published."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from evolve_ai.testing import (
    DEFAULT_MODULES,
    FAST_SETTINGS,
    init_workspace,
    read_events,
    run_evolve,
    start_life_cycle,
    stop_life_cycle,
    wait_until,
    write_template,
)

FIB = ("def fib(terms):\n"
       "    if len(terms) < 3:\n        return None\n"
       "    if all(terms[i] == terms[i - 1] + terms[i - 2] for i in range(2, len(terms))):\n"
       "        return terms[-1] + terms[-2]\n"
       "    return None\n")

HOSTILE: list[dict[str, Any]] = [
    {"name": "escape", "source": "import os\ndef f(terms):\n    return os.getpid()\n"},
    {"name": "forker", "source": "def f(terms):\n    return __import__('os').fork()\n"},
    {"name": "dunder", "source": "def f(terms):\n    return terms.__class__.__mro__\n"},
    {"name": "run", "source": "def f(terms):\n    return exec('1')\n"},
    {"name": "reader", "source": "def f(terms):\n    return open('/etc/passwd')\n"},
    {"name": "shadow", "source": "def f(terms):\n    (lambda eval: 0)\n    return eval('1')\n"},
    {"name": "frame", "source": "def f(terms):\n    return (x for x in terms).gi_frame\n"},
    {"name": "huge", "source": "def f(terms):\n    return 1\n" + "#" * 20000},
    {"name": 7, "source": None},
    {"name": "Bad Name!", "source": FIB},
    {"name": "broken", "source": "def f(terms:\n"},
    {"name": "spin", "source": "def spin(terms):\n    while True:\n        pass\n"},
    {"name": "hog", "source": "def hog(terms):\n    return len([0] * (10 ** 10))\n"},
    {"name": "copy", "source": "def last(terms):\n    return terms[-1] if terms else None\n"},
]


def proposing_runtime(proposals: list[dict[str, Any]]) -> str:
    """A runtime that answers with its genes and, at its first task, proposes."""
    return textwrap.dedent(f'''\
        """Test runtime: proposes genes."""
        import json
        import sys

        __evolve__ = "core"
        PROPOSALS = json.loads({json.dumps(json.dumps(proposals))})


        def main(registry):
            print(json.dumps({{"type": "hello", "genome_hash": ""}}), flush=True)
            proposed = False
            for line in sys.stdin:
                message = json.loads(line)
                if message.get("type") == "stop":
                    return 0
                if message.get("type") != "task":
                    continue
                if not proposed:
                    proposed = True
                    for proposal in PROPOSALS:
                        print(json.dumps({{"type": "propose", **proposal}}), flush=True)
                value = None
                for function in registry.values():
                    value = function(message.get("data"))
                    if value is not None:
                        break
                print(json.dumps({{"type": "answer", "id": message["id"], "value": value}}),
                      flush=True)
            return 0
    ''')


def workspace(tmp_path: Path, proposals: list[dict[str, Any]],
              settings: dict[str, object] | None = None) -> Path:
    template = write_template(tmp_path / "template", DEFAULT_MODULES,
                              runtime=proposing_runtime(proposals))
    return init_workspace(tmp_path / "ws", 3, template=template, seed=2, settings={
        **FAST_SETTINGS, "selection.every": 1000, "innovation.enabled": True,
        "innovation.per_agent": 20, "innovation.trial_seconds": 1.0,
        "innovation.min_solved": 3, **(settings or {})})


def innovations(root: Path) -> dict[str, Any]:
    result = run_evolve(root, "innovations", "--json")
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_a_useful_gene_is_published_as_a_new_template_version(tmp_path: Path) -> None:
    root = workspace(tmp_path, [{"name": "fib", "source": FIB}])
    proc = start_life_cycle(root)
    try:
        wait_until(lambda: innovations(root)["accepted"], 60, "an accepted innovation")
        wait_until(lambda: len(json.loads(run_evolve(root, "template", "--json").stdout)
                               ["versions"]) == 2, 60, "the new template version")
    finally:
        stop_life_cycle(proc)
    [accepted] = innovations(root)["accepted"]
    assert accepted["name"] == "fib" and accepted["status"] == "accepted"
    assert accepted["figures"]["solved_alone"] >= 3 and accepted["figures"]["precision"] == 1
    module = root / "agent_template" / accepted["module"]
    text = module.read_text()
    assert text.startswith(f"# Invented by agent {accepted['agent']}")
    assert "def fib(terms):" in text
    changed = read_events(root, "template_changed")
    assert changed and any(accepted["module"] in c["files_added"] for c in changed)
    # The two other agents proposed the same code: refused as a duplicate, not tried.
    duplicates = [r for r in innovations(root)["rejected"] if "same code" in r["reason"]]
    assert len(duplicates) == 2
    text_report = run_evolve(root, "innovations").stdout
    assert "fib" in text_report and accepted["module"] in text_report


def test_a_hostile_proposer_gets_nothing_published(tmp_path: Path) -> None:
    root = workspace(tmp_path, HOSTILE)
    before = sorted(p.name for p in (root / "agent_template" / "src" / "agent").iterdir())
    proc = start_life_cycle(root)
    try:
        def all_decided() -> bool:
            data = innovations(root)
            return data["pending"] == 0 and len(data["rejected"]) >= 3 * len(HOSTILE)

        wait_until(all_decided, 90, "every proposal decided")
        passes = len(read_events(root, "pass_done"))
        wait_until(lambda: len(read_events(root, "pass_done")) > passes + 2, 30,
                   "the life cycle going on")
        assert proc.poll() is None
    finally:
        stop_life_cycle(proc)
    data = innovations(root)
    assert data["accepted"] == []
    reasons = {r["name"]: r["reason"] for r in data["rejected"]}
    assert "import of 'os'" in reasons["escape"]
    assert "'fork'" in reasons["forker"]  # refused before its __import__ is reached
    assert "attribute '__" in reasons["dunder"]
    assert "'exec'" in reasons["run"] and "'open'" in reasons["reader"]
    assert "over 8192 bytes" in reasons["huge"]
    assert "malformed" in reasons[""]
    assert "lower-case" in reasons["Bad Name!"]
    assert "does not parse" in reasons["broken"]
    assert "no answer within 1 s" in reasons["spin"]  # 200 calls of 0.1 s: past the deadline
    assert "solves 0 tasks" in reasons["hog"]
    assert "behaves as last does" in reasons["copy"]
    assert "'eval' is bound" in reasons["shadow"]
    assert "attribute 'gi_frame'" in reasons["frame"]
    after = sorted(p.name for p in (root / "agent_template" / "src" / "agent").iterdir())
    assert after == before
    assert len(json.loads(run_evolve(root, "template", "--json").stdout)["versions"]) == 1


def test_proposals_beyond_the_budget_are_not_heard(tmp_path: Path) -> None:
    root = workspace(tmp_path, HOSTILE[:4], {"innovation.per_agent": 1})
    proc = start_life_cycle(root)
    try:
        wait_until(lambda: bool(read_events(root, "proposals_over_budget")), 60,
                   "the budget said")
    finally:
        stop_life_cycle(proc)
    over = read_events(root, "proposals_over_budget")
    assert sum(e["count"] for e in over) == 3 * 3  # three agents, three proposals too many
    assert len(innovations(root)["rejected"]) == 3


GENERATOR = f'''
import json

FIB = {FIB!r}


def generate(tasks, sources):
    assert tasks and all(set(task) == {{"data", "expected"}} for task in tasks)
    assert any(path.endswith("alpha.py") for path in sources)
    yield ("fib", FIB)
    yield ("escape", "import os\\ndef f(terms):\\n    return 1\\n")


def broken(tasks, sources):
    raise RuntimeError("the model is down")
'''


def test_a_generator_plugin_proposes_like_an_agent(tmp_path: Path) -> None:
    root = workspace(tmp_path, [], {"innovation.generator": "my_generator:generate",
                                    "innovation.generator_every": 1,
                                    "selection.every": 2})
    (root / "my_generator.py").write_text(GENERATOR)
    proc = start_life_cycle(root)
    try:
        wait_until(lambda: innovations(root)["accepted"], 90, "the generator's gene")
    finally:
        stop_life_cycle(proc)
    data = innovations(root)
    [accepted] = data["accepted"]
    assert accepted["agent"] == "generator:my_generator:generate"
    assert any(r["name"] == "escape" and "import of 'os'" in r["reason"]
               for r in data["rejected"])
    # A generator that fails is said in the log; the life cycle goes on.
    (root / "evolve.toml").write_text((root / "evolve.toml").read_text().replace(
        "my_generator:generate", "my_generator:broken"))
    proc = start_life_cycle(root)
    try:
        wait_until(lambda: bool(read_events(root, "generator_failed")), 90, "the failure")
        passes = len(read_events(root, "pass_done"))
        wait_until(lambda: len(read_events(root, "pass_done")) > passes + 2, 30, "more passes")
    finally:
        stop_life_cycle(proc)
    assert "the model is down" in read_events(root, "generator_failed")[0]["error"]
