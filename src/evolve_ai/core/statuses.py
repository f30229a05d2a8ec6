"""The names of agent and process states (DESIGN §2), apart from the records so that
read-only commands can use them without importing dataclasses."""

STATUSES = ("active", "disabled", "quarantined", "dead")
PROCESS_STATES = ("stopped", "starting", "running", "backoff", "exited")
