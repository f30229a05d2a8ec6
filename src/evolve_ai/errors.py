"""The EvolveError family: every failure knows its exit code and its one-line message.

The CLI catches this family once and prints ``str(error)``; anything else is a bug
and gets a traceback only under ``-v``.
"""

from __future__ import annotations


class EvolveError(Exception):
    """A runtime failure the user can act on; exits 1 by default."""

    exit_code: int = 1

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class ConfigError(EvolveError):
    """`evolve.toml` has an unknown key, a wrong type or a bad value."""


class TemplateError(EvolveError):
    """The agent template cannot be catalogued (syntax error, missing package, ...)."""


class GenomeError(EvolveError):
    """A genome failed strict decoding or validation."""


class WorkspaceError(EvolveError):
    """The workspace is missing, damaged or not an evolve workspace."""


class UnknownAgent(EvolveError):
    """No agent (or more than one) matches the id given."""


class LockHeld(EvolveError):
    """Another process holds the workspace lock; exits 75 (EX_TEMPFAIL)."""

    exit_code = 75
