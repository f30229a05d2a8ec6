"""The fork server's wire contract, shared by the server and its client.

Import-free on purpose: the fork server imports it before any agent is forked, and
every module it holds is a page each child may copy.

Wire protocol (``marshal`` of plain tuples; both sockets are SOCK_SEQPACKET, so one
send is one message):

- control, orchestrator -> server: ``("init", sandbox, preload)`` once, answered by
  ``("ready", server_pid, sandbox_status, pids_status)``; then ``("spawn", max_pids,
  request)`` carrying the agent's stdin, stdout and stderr fds, where ``request`` is
  the marshal of ``(agent_id, cwd, env, limits, writable, readonly_within,
  pycache_prefix)`` (decoded by the child only), answered by ``("ok", pid)`` or
  ``("error", message)``. ``max_pids`` (or None) limits the agent's pids cgroup.
  End of file means the orchestrator is gone or closing: kill every agent and exit.
- events, server -> orchestrator: a list of ``(pid, returncode)`` per message,
  ``returncode`` being negative for a signal, as in subprocess.
"""

SANDBOXED = "namespaces"  # the sandbox status when every namespace layer is in force
MAX_MESSAGE = 1 << 16  # bytes in one SOCK_SEQPACKET message, either way
# An events message stays far below MAX_MESSAGE: an exit report is well under 200 bytes.
REPORTS_PER_MESSAGE = 256
# Setup failures of a child exit with this status, like a shell's "command not found".
SETUP_FAILED = 127
