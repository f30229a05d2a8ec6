"""The ``evolve`` console script: ``evolve status`` on a quick path, the rest through click.

``status`` must answer within 50 ms at 1000 agents while a life cycle runs: monitoring
scripts call it in loops (docs/design.md, "cli: thin"). Importing click and the full
command line costs about 25 ms of that, so the plain forms of ``status`` are recognised
here by hand; anything else (help, ``-v``, a typo, every other command) goes to ``cli``,
which parses and reports usage errors as always. Both paths print the same bytes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

_QUIET = ("-q", "--quiet")


def main() -> None:
    quick = quick_status(sys.argv[1:])
    if quick is None:
        from evolve_ai.cli import main as full

        full()
        return
    sys.exit(run_status(*quick))


def quick_status(argv: Sequence[str]) -> tuple[str | None, bool] | None:
    """``(root, as_json)`` for ``[--root DIR] [-q] status [--json]``; None for any other
    command line, left to click."""
    root: str | None = None
    index = 0
    while index < len(argv) and argv[index] != "status":
        arg = argv[index]
        if arg == "--root" and index + 1 < len(argv):
            root = argv[index + 1]
            index += 2
        elif arg.startswith("--root="):
            root = arg.removeprefix("--root=")
            index += 1
        elif arg in _QUIET:
            index += 1
        else:
            return None
    rest = argv[index + 1:]
    if index == len(argv) or rest not in ([], ["--json"]):
        return None
    if root is None:
        root = os.environ.get("EVOLVE_ROOT") or None  # click ignores an empty variable
    if root is not None and (root == "" or os.path.isfile(root)):
        return None  # click's own message for a bad --root
    return root, rest == ["--json"]


def run_status(root: str | None, as_json: bool) -> int:
    from evolve_ai import render

    try:
        from evolve_ai.operations import inspect
        from evolve_ai.services.workspace import resolve_root

        data = inspect.status(resolve_root(root), None if as_json else render.SCREENFUL)
        text = render.dumps(data) if as_json else render.status_text(data)
    except (Exception, KeyboardInterrupt) as exc:
        line, code = render.failure(exc)
        sys.stderr.write(line + "\n")
        return code
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    return 0
