"""Tiny agents (sources of ``agent/main.py``) for the launcher's tests."""

from __future__ import annotations

# Says who it is and where it runs, then echoes every line until end of input.
HELLO_ECHO = """\
import json, os, sys
print(json.dumps({"type": "hello", "cwd": os.getcwd(), "argv0": sys.argv[0],
                  "name": __name__, "env": dict(os.environ), "path": sys.path}),
      flush=True)
for line in sys.stdin:
    print(line.rstrip("\\n"), flush=True)
"""

# A hello, then waits for end of input: the shape of a real agent's start.
HELLO_WAIT = """\
import sys
print('{"type": "hello", "genome_hash": ""}', flush=True)
sys.stdin.read()
"""

QUIT_AT_ONCE = ""

# Unflushed output and exit handlers must survive the exit, as with `python -m`.
EXIT_3 = """\
import atexit
atexit.register(print, "atexit ran")
print("bye")
raise SystemExit(3)
"""

STDIO = """\
import json, random, sys
print(json.dumps({"write_through": sys.stdout.write_through,
                  "encoding": sys.stdout.encoding, "random": random.random()}))
"""

CRASH = "raise ValueError('boom')\n"

SLEEPER = """\
import time
print("ready", flush=True)
time.sleep(60)
"""

# Forks a grandchild (same process group) and says its pid.
FORKER = """\
import os, time
child = os.fork()
if child == 0:
    time.sleep(60)
    os._exit(0)
print(child, flush=True)
time.sleep(60)
"""

MEMORY_HOG = """\
data = bytearray(1 << 30)
print(len(data), flush=True)
"""

SPINNER = """\
print("spinning", flush=True)
while True:
    pass
"""

# Writes 2 MiB and says how it went (Python ignores SIGXFSZ: the write fails).
BIG_WRITER = """\
import errno
try:
    with open("big.bin", "wb") as file:
        file.write(b"x" * (2 << 20))
    print("written", flush=True)
except OSError as error:
    print(errno.errorcode[error.errno], flush=True)
"""

# Tries what the sandbox forbids; OUTSIDE, PORT and SIBLING (a file in another agent's
# directory, through /proc/<pid>/root) come from its environment.
PROBE = """\
import errno, json, os, socket

def write(path):
    try:
        with open(path, "w") as file:
            file.write("x")
    except OSError as error:
        return errno.errorcode.get(error.errno, str(error))
    return "ok"

def connect(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError as error:
        return errno.errorcode.get(error.errno or 0, type(error).__name__)
    return "ok"

with open("/proc/self/status") as status:
    capabilities = [line.split()[1] for line in status if line.startswith("CapEff")][0]
print(json.dumps({"outside": write(os.environ["OUTSIDE"]), "inside": write("inside.txt"),
                  "src": write("src/new.py"), "net": connect(int(os.environ["PORT"])),
                  "sibling": write(os.environ["SIBLING"]), "capabilities": capabilities}),
      flush=True)
"""

# Run as the orchestrator by the orchestrator-death test: argv[1] is an agent directory.
ORCHESTRATOR = """\
import json, os, sys, time
from evolve_ai.services.forkserver_launcher import ForkServerLauncher
from evolve_ai.services.launcher import LaunchSpec, Rlimits

directory = sys.argv[1]
launcher = ForkServerLauncher()
launcher.start()
log = os.open(os.path.join(directory, "agent.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
none = Rlimits(None, None, None, None, None)
launched = [launcher.spawn(LaunchSpec(f"agent-{n}", directory, {}, none, (directory,), (),
                                      None), log)
            for n in range(3)]
print(json.dumps([agent.pid for agent in launched]), flush=True)
time.sleep(60)
"""

# Forks (children sleep) until the kernel refuses, says how far it got, waits for EOF.
FORK_UNTIL_REFUSED = """\
import errno, json, os, sys, time
children, refused = [], None
for _ in range(64):  # bounded, for the test machine's sake
    try:
        pid = os.fork()
    except OSError as error:
        refused = errno.errorcode.get(error.errno)
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    children.append(pid)
print(json.dumps({"children": len(children), "refused": refused}), flush=True)
sys.stdin.read()
"""

# Leaves a grandchild in a session of its own (out of reach of killpg), then exits. The
# grandchild holds a lock on "held" for as long as it lives.
LEAVE_AN_ESCAPEE = """\
import fcntl, os, sys, time
read, write = os.pipe()
if os.fork() == 0:
    os.setsid()
    fcntl.flock(os.open("held", os.O_RDWR | os.O_CREAT), fcntl.LOCK_EX)
    os.write(write, str(os.getpid()).encode())
    time.sleep(60)
    os._exit(0)
print(os.read(read, 32).decode(), flush=True)
"""

# What an agent can see of other processes, and whether it can signal them (signal 0).
PID_PROBE = """\
import errno, json, os

def signal(pid):
    try:
        os.kill(pid, 0)
    except OSError as error:
        return errno.errorcode.get(error.errno, str(error))
    return "ok"

visible = sorted(int(name) for name in os.listdir("/proc") if name.isdigit())
print(json.dumps({"pid": os.getpid(), "visible": visible,
                  "orchestrator": signal(int(os.environ["ORCHESTRATOR"])),
                  "sibling": signal(int(os.environ["SIBLING"])),
                  "run": sorted(os.listdir("/run")) if os.path.isdir("/run") else None}),
      flush=True)
"""

# Who it runs as, and what of root's it can still reach.
UID_PROBE = """\
import errno, json, os

def read(path):
    try:
        with open(path, "rb") as file:
            file.read(1)
    except OSError as error:
        return errno.errorcode.get(error.errno, str(error))
    return "ok"

def write(path):
    try:
        with open(path, "w") as file:
            file.write("x")
    except OSError as error:
        return errno.errorcode.get(error.errno, str(error))
    return "ok"

print(json.dumps({"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
                  "shadow": read("/etc/shadow"), "sibling": read(os.environ["SIBLING"]),
                  "inside": write("mine.txt")}), flush=True)
"""

# Whether it can make a user namespace (where it would hold every capability).
USERNS_PROBE = """\
import ctypes, errno, json, os
libc = ctypes.CDLL(None, use_errno=True)
result = "ok" if libc.unshare(0x10000000) == 0 else errno.errorcode[ctypes.get_errno()]
print(json.dumps({"unshare": result}), flush=True)
"""

# Touches 100 MB (every page), then says so.
TOUCH_100MB = """\
data = bytearray(100 << 20)
for offset in range(0, len(data), 4096):
    data[offset] = 1
print("touched", flush=True)
"""

# Keeps state in a subdirectory of its own across runs, then waits.
KEEPER = """\
import os
os.makedirs("data", exist_ok=True)
with open("data/state", "a") as state:
    state.write("x")
print("kept", flush=True)
import time
time.sleep(60)
"""
