"""The fork server's wire contract, shared by the server and its client.

The messages over the control and events sockets are described in docs/design.md
("The fork server"). Import-free on purpose: the fork server imports it before any agent
is forked, and every module it holds is a page each child may copy.
"""

SANDBOXED = "namespaces"  # the sandbox status when every namespace layer is in force
# ...when all but the agent's own pid namespace are (followed by ": <reason>").
NO_PID_NAMESPACE = "namespaces, no pid namespace"
# ...when all but the ban on user namespaces made from inside are (": <reason>").
USER_NAMESPACES_OPEN = "namespaces, user namespaces open"
MAX_MESSAGE = 1 << 16  # bytes in one SOCK_SEQPACKET message, either way
# An events message stays far below MAX_MESSAGE: an exit report is well under 200 bytes.
REPORTS_PER_MESSAGE = 256
# Setup failures of a child exit with this status, like a shell's "command not found".
SETUP_FAILED = 127
