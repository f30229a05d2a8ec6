"""``python -m evolve_ai``: the same as the ``evolve`` command."""

from evolve_ai.entry import main

main()
