"""The trial of genes, run in the agents' sandbox as a trial directory's ``agent.main``.

Never imported by the orchestrator: ``operations/trial.py`` copies this file into a
trial directory beside the modules on trial and launches it like an agent. It reads one
JSON line, ``{"genes": ["agent.module:function", ...], "tasks": [data, ...]}``, calls
every gene on every task (a fresh copy of the data each time) and writes one JSON line,
``{"answers": {gene: [value or null, ...]}, "errors": {gene: "..."}}``. A gene that
raises (or runs past CALL_SECONDS) answers null; a module that does not import answers null
everywhere. Only JSON
integers, strings and floats are passed on: anything else is null.
"""

import importlib
import json
import signal
import sys

CALL_SECONDS = 0.1  # one gene on one task: past this it is no answer


def _too_long(_signum: int, _frame: object) -> None:
    raise TimeoutError("a call took too long")


def main() -> int:
    signal.signal(signal.SIGALRM, _too_long)
    request = json.loads(sys.stdin.readline())
    tasks = [json.dumps(task) for task in request["tasks"]]
    answers: dict[str, list[object]] = {}
    errors: dict[str, str] = {}
    for gene in request["genes"]:
        module_name, _, function_name = gene.partition(":")
        try:
            function = getattr(importlib.import_module(module_name), function_name)
        except Exception as error:
            errors[gene] = f"{type(error).__name__}: {error}"[:300]
            answers[gene] = [None] * len(tasks)
            continue
        row: list[object] = []
        for task in tasks:
            try:
                signal.setitimer(signal.ITIMER_REAL, CALL_SECONDS)
                value = function(json.loads(task))
            except Exception:
                value = None
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            plain = ((type(value) is int and abs(value) < 2**63) or type(value) is float
                     or (type(value) is str and len(value) <= 1000))
            row.append(value if plain else None)
        answers[gene] = row
    sys.stdout.write("\n" + json.dumps({"answers": answers, "errors": errors}) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
