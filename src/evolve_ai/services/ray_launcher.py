"""Agents on a Ray cluster, behind the launcher seam (``cluster.backend = "ray"``).

The orchestrator stays one process on the head; each node of the cluster runs a node
actor (``ray_node.Node``) that owns a fork server of its own. The supervisor cannot
tell: each remote agent gets a pair of local pipes, and one bridge thread moves their
bytes to and from the nodes in one ``exchange`` call per node every
``cluster.exchange_interval`` seconds, whatever the number of agents.

Agents' directories are made, scanned and rewired on the head. Nodes either share the
workspace's file system (``cluster.shared_files``: a loopback cluster does; a real one
mounts it) and run agents there, or lay each agent out locally from what the head
sends and send rewritten genomes back (``materialise.py``). A pid the supervisor sees
is virtual: the node's slot times ``PID_SPAN`` plus the agent's pid on its node, so
that two nodes' pids never meet. A node that dies takes its agents with it: each is
reported killed (SIGKILL, ``lost``: no crash of theirs), the supervisor starts it
again at the next pass, and the launch picks a live node.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from evolve_ai._linux import name_thread
from evolve_ai._wire import SANDBOXED
from evolve_ai.services import logs
from evolve_ai.services.config import ClusterSection
from evolve_ai.services.files import atomic_write
from evolve_ai.services.launcher import Exited, Launched, LaunchError, LaunchSpec, Usage
from evolve_ai.services.materialise import GENOME, Report, bundle, commons_files, digest
from evolve_ai.services.ray_node import DEFAULT_ROOT, PENDING_CAP, Batch, Node, NodeStatus

RAY: Any = ray  # for its untyped functions (the type checker may not see Ray at all)
HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)  # the life cycle's signals
PID_SPAN = 1 << 22  # above Linux's largest pid_max
CALL_TIMEOUT = 30.0  # seconds a node may take to answer before it counts as lost
DISCOVERY_EVERY = 2.0  # seconds between two looks for nodes that joined
OUT_CAP = 1 << 22  # bytes an agent said that the supervisor has not read yet
REFUSED_FOR = 60.0  # seconds before a node whose actor failed is tried again
MEASURE_TIMEOUT = 2.0  # seconds a pass waits for the nodes' measurements
PROBE_TIMEOUT = 5.0
SPAWN_TIMEOUT = 10.0  # seconds a launch may take on a node before it counts as failed
CLOSE_TIMEOUT = 5.0  # seconds the nodes have, together, to stop their agents
STALE = 2.0  # seconds an exchange may be out before its node gets no new agent
FAILURES = 20  # bridge failures in a row after which every node counts as lost
WRITTEN_CAP = 100_000  # genome sequences remembered (then forgotten: a rewrite at worst)
UNCLAIMED_CAP = 4096  # news of pids not yet known kept per node
  # seconds to reach the cluster's address before ray.init
CURRENT_CLUSTER = "/tmp/ray/ray_current_cluster"  # where `ray start` leaves its address


@dataclass(slots=True)
class _Remote:
    """One agent on a node, and the head's ends of its local pipes."""

    agent_id: str
    pid: int  # on its node
    directory: Path  # on the head
    stdin: int | None  # read end: what the supervisor writes to the agent
    stdout: int | None  # write end: what the agent said, for the supervisor
    said: bytearray = field(default_factory=bytearray)
    ended: bool = False  # its stdout ended on the node
    exit_code: int | None = None  # it exited; reported once all it said is through
    backlog: int = 0  # bytes the node holds for it, not yet read by the agent


@dataclass(slots=True)
class _News:
    """What a node said of a pid the head does not know yet (a spawn still returning)."""

    said: bytearray = field(default_factory=bytearray)
    ended: bool = False
    exit_code: int | None = None


@dataclass(slots=True)
class _NodeHandle:
    slot: int
    node_id: str
    actor: Any
    status: NodeStatus
    agents: dict[int, _Remote] = field(default_factory=dict)  # by the node's pid
    signals: list[tuple[int, int]] = field(default_factory=list)
    unclaimed: dict[int, _News] = field(default_factory=dict)  # by the node's pid
    pouring: set[int] = field(default_factory=set)  # agents with bytes or an exit to settle
    backlogged: set[int] = field(default_factory=set)  # agents that may have a backlog
    asked: float = 0.0  # when the exchange in flight was sent; 0: none in flight
    sent: set[str] = field(default_factory=set)  # digests of files it holds (no shared fs)
    commons: str = ""  # digest of the commons it was last sent

    @property
    def label(self) -> str:
        return f"{self.status.host}/{self.node_id[:8]}"


class RayLauncher:
    """A ``Launcher`` whose agents run on the nodes of a Ray cluster."""

    def __init__(self, cluster: ClusterSection, commons: Path, agents: Path, *,
                 sandbox: bool = True) -> None:
        """``commons``: the workspace's, copied to nodes that do not share its files;
        ``agents``: the workspace's agents directory, the only place genomes coming
        back from nodes are written."""
        self._cluster = cluster
        self._commons = commons
        self._agents = agents.resolve()
        # Where nodes without the head's files lay agents out: one place per workspace.
        self._node_root = None if cluster.shared_files else os.path.join(
            cluster.node_dir or DEFAULT_ROOT,
            f"evolve-{digest(str(agents.resolve()).encode())[:12]}")
        self._genome_lock = threading.Lock()  # one writer of genomes at a time
        self._written: dict[tuple[int, str], int] = {}  # (node slot, agent) -> sequence
        self._sandbox = sandbox
        self._lock = threading.RLock()
        self._nodes: dict[str, _NodeHandle] = {}  # by Ray node id
        self._slots = 0
        self._exits: list[Exited] = []
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._discovered = 0.0
        self._joining: dict[str, tuple[Any, Any, float]] = {}  # node id -> (actor, ref, since)
        self._refused: dict[str, float] = {}  # node id -> when to try it again
        self._remote_node: Any = ray.remote(Node)
        self.log = logs.get_logger(command="life-cycle")
        self._statuses: tuple[str, str, str] = ("not started",) * 3
        # The supervisor's writes to remote agents, seen without a read per agent.
        self._inputs = select.epoll()
        self._readers: dict[int, tuple[_NodeHandle, _Remote]] = {}  # stdin fd -> its agent

    # --- the seam ---------------------------------------------------------------

    @property
    def alive(self) -> bool:
        with self._lock:
            return bool(self._nodes) and self._thread is not None and self._thread.is_alive()

    @property
    def sandbox_status(self) -> str:
        return self._statuses[0]

    @property
    def pids_status(self) -> str:
        return self._statuses[1]

    @property
    def memory_status(self) -> str:
        return self._statuses[2]

    def start(self) -> None:
        if self._thread is not None:
            return
        if not ray.is_initialized():
            _reachable(self._cluster.address)  # Ray itself would retry for ever
            # Ray's core installs handlers of its own (SIGTERM would kill the process
            # at once): the life cycle's are put back, so a stop still saves.
            handlers = {sig: signal.getsignal(sig) for sig in HANDLED}
            try:
                ray.init(address=self._cluster.address, namespace="evolve",
                         _node_ip_address=self._cluster.node_address or None,
                         logging_level=logging.WARNING, log_to_driver=False,
                         configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as error:
                raise LaunchError(f"cannot join the Ray cluster at "
                                  f"{self._cluster.address!r}: {error}") from error
            finally:
                for sig, handler in handlers.items():
                    if handler is not None:
                        signal.signal(sig, handler)
        self._discover()
        self._admit(wait=CALL_TIMEOUT)
        if not self._nodes:
            raise LaunchError("no node of the Ray cluster could start evolve's node actor "
                              "(too few free CPUs for cluster.node_cpus?)")
        self._thread = threading.Thread(target=self._bridge, name="ray-bridge", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=CALL_TIMEOUT)
        with self._lock:
            nodes, self._nodes = list(self._nodes.values()), {}
        # Every node stops its fork server (its agents die with it) at once; one wait.
        # (No Ray call when it never joined: Ray would start a local instance.)
        if ray.is_initialized():
            for actor, _, _ in self._joining.values():
                with contextlib.suppress(RayError):
                    ray.kill(actor)
            closing = []
            for node in nodes:
                with contextlib.suppress(RayError):
                    closing.append(node.actor.close.remote())
            if closing:
                with contextlib.suppress(RayError):
                    ray.wait(closing, num_returns=len(closing), timeout=CLOSE_TIMEOUT)
            for node in nodes:
                with contextlib.suppress(RayError):
                    ray.kill(node.actor)
        with self._lock:
            for node in nodes:
                for remote in node.agents.values():
                    self._close_local(remote)
        self._inputs.close()
        for fd in (self._wake_read, self._wake_write):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_read = self._wake_write = -1

    def fileno(self) -> int:
        return self._wake_read

    def spawn(self, spec: LaunchSpec, stderr_fd: int) -> Launched:
        node = self._choose()
        try:
            log_path = os.readlink(f"/proc/self/fd/{stderr_fd}")
            # The pipes first: a process out of fds must fail before the agent exists.
            to_agent_read, to_agent_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as error:
            raise LaunchError(f"agent {spec.agent_id}: {error}") from None
        try:
            from_agent_read, from_agent_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as error:
            _close_fds(to_agent_read, to_agent_write)
            raise LaunchError(f"agent {spec.agent_id}: {error}") from None
        fds = (to_agent_read, to_agent_write, from_agent_read, from_agent_write)
        shipped = None
        try:
            if self._node_root is not None:
                shipped = bundle(Path(spec.cwd), node.sent)
            pid, created = ray.get(node.actor.spawn.remote(spec, log_path, shipped),
                                   timeout=SPAWN_TIMEOUT)
        except RayTaskError as error:  # the node refused it (before LaunchError: Ray's
            _close_fds(*fds)            # error is one too, with the remote traceback)
            if shipped is not None:  # the node may not have kept them
                node.sent.difference_update(shipped.blobs)
            raise LaunchError(f"on node {node.label}: {error.cause or error}") from None
        except LaunchError:
            _close_fds(*fds)
            raise
        except (RayError, GetTimeoutError) as error:
            _close_fds(*fds)
            if shipped is not None:
                node.sent.difference_update(shipped.blobs)
            # Slow or gone: either way it is given up (its actor killed), so that an agent
            # it might still start is never left running with nobody listening.
            self._lose(node, f"spawn failed: {type(error).__name__}")
            raise LaunchError(f"node {node.label} did not start {spec.agent_id}: "
                              f"{type(error).__name__}") from None
        with self._lock:
            if self._nodes.get(node.node_id) is not node:  # lost meanwhile: so is the agent
                _close_fds(*fds)
                raise LaunchError(f"node {node.label} lost while starting {spec.agent_id}")
            remote = _Remote(spec.agent_id, pid, Path(spec.cwd), to_agent_read,
                             from_agent_write)
            news = node.unclaimed.pop(pid, None)  # what it did before we knew its pid
            if news is not None:
                remote.said, remote.ended, remote.exit_code = (news.said, news.ended,
                                                              news.exit_code)
                node.pouring.add(pid)
            node.agents[pid] = remote
            self._readers[to_agent_read] = (node, remote)
            self._inputs.register(to_agent_read, select.EPOLLIN)
        return Launched(spec.agent_id, node.slot * PID_SPAN + pid, created, to_agent_write,
                        from_agent_read)

    def read_exits(self) -> list[Exited]:
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self._wake_read, 4096):
                pass
        with self._lock:
            exits, self._exits = self._exits, []
        return exits

    def signal_group(self, pid: int, sig: int) -> None:
        with self._lock:
            node = self._by_slot(pid // PID_SPAN)
            if node is not None and pid % PID_SPAN in node.agents:
                node.signals.append((pid % PID_SPAN, sig))

    def measure(self, pids: Collection[int]) -> dict[int, Usage]:
        asked: dict[int, list[int]] = {}
        for pid in pids:
            asked.setdefault(pid // PID_SPAN, []).append(pid % PID_SPAN)
        with self._lock:
            calls = [(node, node.actor.measure.remote(local))
                     for slot, local in asked.items()
                     if (node := self._by_slot(slot)) is not None]
        if self._node_root is not None:
            self._fetch_genomes()
        usage: dict[int, Usage] = {}
        refs = [ref for _, ref in calls]
        ready = set(ray.wait(refs, num_returns=len(refs), timeout=MEASURE_TIMEOUT)[0]
                    if refs else ())
        for node, ref in calls:
            if ref not in ready:
                continue  # measured at the next pass; the bridge tells a lost node
            try:
                measured = ray.get(ref, timeout=0)
            except (RayError, GetTimeoutError):
                continue
            usage.update((node.slot * PID_SPAN + pid, used) for pid, used in measured.items())
        return usage

    def _fetch_genomes(self) -> None:
        """Once a pass: genomes agents rewrote on their nodes, into their directories on
        the head, where the scan finds them as it finds a local agent's."""
        with self._lock:
            calls = [(node, node.actor.genomes.remote()) for node in self._nodes.values()]
        refs = [ref for _, ref in calls]
        ready = set(ray.wait(refs, num_returns=len(refs), timeout=MEASURE_TIMEOUT)[0]
                    if refs else ())
        for node, ref in calls:
            if ref not in ready:
                continue
            try:
                reports: list[Report] = ray.get(ref, timeout=0)
            except (RayError, GetTimeoutError):
                continue
            self._store_genomes(node, reports)

    def _store_genomes(self, node: _NodeHandle, reports: list[Report]) -> None:
        """Genomes from a node into the agents' directories on the head, each newer than
        what this node last sent for it (the main thread and the bridge both call)."""
        with self._genome_lock:
            if len(self._written) > WRITTEN_CAP:
                self._written.clear()
            for report in reports:
                directory = Path(report.head)
                if directory.resolve().parent != self._agents \
                        or directory.name != report.agent_id:
                    continue  # the node's word, checked all the same
                key = (node.slot, report.agent_id)
                if report.sequence <= self._written.get(key, -1):
                    continue  # an older look than one already kept
                self._written[key] = report.sequence
                _keep_genome(directory, report.data)

    def placement(self) -> dict[str, int]:
        """Agents running on each node, by its label (host/node id)."""
        with self._lock:
            return {node.label: len(node.agents) for node in self._nodes.values()}

    # --- nodes ---------------------------------------------------------------------

    def _discover(self) -> None:
        """Ask for an actor on every live node that has none (answers come in _admit)."""
        now = self._discovered = time.monotonic()
        try:
            nodes: list[dict[str, Any]] = RAY.nodes()
        except RayError:
            return
        for info in nodes:
            node_id = info["NodeID"]
            if not info.get("Alive") or node_id in self._nodes or node_id in self._joining \
                    or self._refused.get(node_id, 0.0) > now:
                continue
            actor: Any = self._remote_node.options(
                num_cpus=self._cluster.node_cpus, max_restarts=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            ).remote(self._sandbox, root=self._node_root)
            self._joining[node_id] = (actor, actor.status.remote(), now)

    def _admit(self, wait: float = 0.0) -> None:
        """Take in the nodes whose actor is ready; give up on those that took too long
        (a node without the CPUs ``node_cpus`` asks for, say) for REFUSED_FOR seconds."""
        refs = [ref for _, ref, _ in self._joining.values()]
        ready = set(ray.wait(refs, num_returns=len(refs), timeout=wait)[0] if refs else ())
        now = time.monotonic()
        for node_id, (actor, ref, since) in list(self._joining.items()):
            if ref not in ready and now - since <= CALL_TIMEOUT:
                continue
            del self._joining[node_id]
            try:
                status: NodeStatus = ray.get(ref, timeout=0)
            except (RayError, GetTimeoutError) as error:
                self._refused[node_id] = now + REFUSED_FOR
                self.log.warning("node_unavailable", node=node_id[:8],
                                 error=f"{type(error).__name__}: {error}"[:300])
                with contextlib.suppress(RayError):
                    ray.kill(actor)
                continue
            with self._lock:
                self._slots += 1
                handle = _NodeHandle(self._slots, node_id, actor, status)
            if self._node_root is not None:  # its agents read the commons from the start
                self._send_commons([handle])
            with self._lock:
                self._nodes[node_id] = handle
                self._statuses = self._weakest()
            self.log.info("node_joined", node=handle.label, sandbox=status.sandbox)

    def _weakest(self) -> tuple[str, str, str]:
        """The sandbox as the least confined node has it (agents may land anywhere)."""
        statuses = [n.status for n in self._nodes.values()]
        sandbox = next((s.sandbox for s in statuses if s.sandbox != SANDBOXED), SANDBOXED)
        processes = next((s.processes for s in statuses if s.processes != "pids cgroup"),
                         "pids cgroup")
        memory = next((s.memory for s in statuses if s.memory != "memory cgroup"),
                      "memory cgroup")
        return sandbox, processes, memory

    def _choose(self) -> _NodeHandle:
        """The live node with the fewest agents, below ``agents_per_node``; a node whose
        exchange has been out for STALE seconds gets none (it may be dying)."""
        cap = self._cluster.agents_per_node
        now = time.monotonic()
        with self._lock:
            fresh = [n for n in self._nodes.values() if not n.asked or now - n.asked < STALE]
            open_nodes = [n for n in fresh if not cap or len(n.agents) < cap]
            if not open_nodes:
                raise LaunchError("every node of the Ray cluster is full "
                                  f"(cluster.agents_per_node = {cap})" if fresh
                                  else "no node of the Ray cluster answers")
            return min(open_nodes, key=lambda n: (len(n.agents), n.slot))

    def _by_slot(self, slot: int) -> _NodeHandle | None:
        return next((n for n in self._nodes.values() if n.slot == slot), None)

    def _lose(self, node: _NodeHandle, why: str) -> None:
        """A node is gone: its agents are reported killed, the node forgotten."""
        with self._lock:
            if self._nodes.get(node.node_id) is not node:
                return
            del self._nodes[node.node_id]
            for remote in node.agents.values():
                self._close_local(remote)
                self._exits.append(Exited(remote.agent_id, node.slot * PID_SPAN + remote.pid,
                                          -signal.SIGKILL, lost=f"node {node.label} lost"))
            lost = len(node.agents)
            node.agents.clear()
        with contextlib.suppress(RayError):
            ray.kill(node.actor)
        self.log.warning("node_lost", node=node.label, agents=lost, reason=why)
        self._wake()

    def _close_local(self, remote: _Remote) -> None:
        """Close the head's ends of an agent's pipes (under the lock)."""
        if remote.stdin is not None:
            self._readers.pop(remote.stdin, None)
            with contextlib.suppress(OSError, ValueError):
                self._inputs.unregister(remote.stdin)
        _close_fds(*(fd for fd in (remote.stdin, remote.stdout) if fd is not None))
        remote.stdin = remote.stdout = None

    # --- the bridge ------------------------------------------------------------------

    def _bridge(self) -> None:
        """One exchange in flight per node; a node slow to answer holds back only its
        own agents, and one silent for CALL_TIMEOUT is lost. A failure of the bridge
        itself is logged; FAILURES in a row count every node as lost."""
        name_thread()
        interval = self._cluster.exchange_interval
        calls: dict[int, tuple[_NodeHandle, Any]] = {}  # node slot -> (node, its ref)
        failures = 0
        while not self._stopping.is_set():
            began = time.monotonic()
            try:
                self._round(calls, interval)
                failures = 0
            except Exception as error:  # whatever it is, the agents must not freeze
                failures += 1
                self.log.error("bridge_failed", error=f"{type(error).__name__}: {error}"[:300],
                               failures=failures)
                if failures >= FAILURES:
                    for node in list(self._nodes.values()):
                        self._lose(node, "the bridge keeps failing")
                    calls.clear()
                    failures = 0
            self._stopping.wait(max(0.0, interval - (time.monotonic() - began)))

    def _round(self, calls: dict[int, tuple[_NodeHandle, Any]], interval: float) -> None:
        began = time.monotonic()
        if began - self._discovered > DISCOVERY_EVERY:
            self._discover()
            if self._node_root is not None:
                self._send_commons()
        if self._joining:
            self._admit()
        with self._lock:
            outgoing = self._outgoing(set(calls))
            for node in self._nodes.values():
                if node.slot not in calls:
                    output, closing, room = outgoing.get(node.slot, ({}, [], {}))
                    signals, node.signals = node.signals, []
                    calls[node.slot] = (node, node.actor.exchange.remote(
                        output, closing, signals, room))
                    node.asked = began
        refs = [ref for _, ref in calls.values()]
        ready = set(ray.wait(refs, num_returns=len(refs), timeout=interval)[0]
                    if refs else ())
        for slot, (node, ref) in list(calls.items()):
            if ref in ready:
                del calls[slot]
                node.asked = 0.0
                try:
                    batch = ray.get(ref, timeout=0)
                except (RayError, GetTimeoutError) as error:
                    self._lose(node, f"{type(error).__name__}: {error}"[:300])
                    continue
                self._deliver(node, batch)
            elif time.monotonic() - node.asked > CALL_TIMEOUT:
                del calls[slot]
                self._lose(node, f"no answer in {CALL_TIMEOUT:.0f} s")
        with self._lock:
            settled = [self._settle(node) for node in self._nodes.values()]
        if any(settled):
            self._wake()

    def _send_commons(self, nodes: list[_NodeHandle] | None = None) -> None:
        """The workspace's commons (catalogue, published genomes) to every node (or
        ``nodes``) that has not got this content yet; a node is marked up to date only
        once it said it has it."""
        files = commons_files(self._commons)
        key = digest(b"".join(name.encode() + b"\0" + digest(data).encode()
                              for name, data in sorted(files.items())))
        with self._lock:
            stale = [n for n in (nodes if nodes is not None else self._nodes.values())
                     if n.commons != key]
        calls = [(node, node.actor.set_commons.remote(files)) for node in stale]
        for node, ref in calls:
            with contextlib.suppress(RayError, GetTimeoutError):
                ray.get(ref, timeout=CALL_TIMEOUT)
                node.commons = key

    def _outgoing(self, busy: set[int]
                  ) -> dict[int, tuple[dict[int, bytes], list[int], dict[int, int]]]:
        """What the supervisor wrote to remote agents since the last round, by node slot,
        with how much more each agent's output may bring (under the lock); nodes with an
        exchange in flight (``busy``) wait for the next round. An agent
        whose node holds PENDING_CAP unread bytes for it is sent no more: its pipe on
        the head fills, and the supervisor holds back as for a local agent."""
        found: dict[int, tuple[dict[int, bytes], list[int], dict[int, int]]] = {}
        for fd, _ in self._inputs.poll(0):
            entry = self._readers.get(fd)
            if entry is None:
                continue
            node, remote = entry
            if node.slot in busy:
                continue
            allowance = PENDING_CAP - remote.backlog
            if allowance <= 0:
                continue
            data, ended = _drain(fd, allowance)
            output, closing, _ = found.setdefault(node.slot, ({}, [], {}))
            if data:
                output[remote.pid] = data
                remote.backlog += len(data)
                node.backlogged.add(remote.pid)
            if ended:
                self._readers.pop(fd, None)
                with contextlib.suppress(OSError, ValueError):
                    self._inputs.unregister(fd)
                _close_fds(fd)
                remote.stdin = None
                closing.append(remote.pid)
        for node in self._nodes.values():
            if node.slot in busy:
                continue
            for pid in node.pouring:
                pouring = node.agents.get(pid)
                if pouring is not None:
                    room = found.setdefault(node.slot, ({}, [], {}))[2]
                    room[pid] = max(0, OUT_CAP - len(pouring.said))
        return found

    def _deliver(self, node: _NodeHandle, batch: Batch) -> None:
        """A node's news: bytes, ends and exits, kept for news of pids not yet known."""
        with self._lock:
            if self._nodes.get(node.node_id) is not node:
                return
            for pid in node.backlogged | batch.backlog.keys():
                if (remote := node.agents.get(pid)) is not None:
                    remote.backlog = batch.backlog.get(pid, 0)
            node.backlogged = set(batch.backlog)
            for pid, data in batch.output.items():
                self._heard(node, pid).said.extend(data)
                node.pouring.add(pid)
            for pid in batch.closed:
                self._heard(node, pid).ended = True
                node.pouring.add(pid)
            for pid, returncode in batch.exits:
                self._heard(node, pid).exit_code = returncode
                node.pouring.add(pid)
        # An exited agent's last genome, before its exit is reported: the scan sees it.
        self._store_genomes(node, batch.genomes)

    def _heard(self, node: _NodeHandle, pid: int) -> _Remote | _News:
        known = node.agents.get(pid)
        if known is not None:
            return known
        if len(node.unclaimed) >= UNCLAIMED_CAP:
            node.unclaimed.clear()  # a spawn lost on its way back: nobody will claim them
        return node.unclaimed.setdefault(pid, _News())

    def _settle(self, node: _NodeHandle) -> bool:
        """Pour what agents said into the supervisor's pipes; report an exit once all an
        agent said is through (or its reader is gone). True when an exit was reported."""
        reported = False
        for pid in list(node.pouring):
            remote = node.agents.get(pid)
            if remote is None:
                node.pouring.discard(pid)
                continue
            _pour(remote)
            if remote.exit_code is not None and (not remote.said or remote.stdout is None):
                self._close_local(remote)
                del node.agents[pid]
                self._exits.append(Exited(remote.agent_id, node.slot * PID_SPAN + pid,
                                          remote.exit_code))
                reported = True
            if not remote.said and (remote.exit_code is None or pid not in node.agents):
                node.pouring.discard(pid)
        return reported

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_write, b"!")


def _reachable(address: str) -> None:
    """Raise LaunchError unless the cluster's address (``auto``: as Ray finds it) takes a
    TCP connection within PROBE_TIMEOUT."""
    where = address
    if address == "auto":
        where = os.environ.get("RAY_ADDRESS", "")
        if not where:
            with contextlib.suppress(OSError):
                where = Path(CURRENT_CLUSTER).read_text().strip()
        if not where:
            raise LaunchError("no Ray cluster found (cluster.address = \"auto\": start one "
                              "with `ray start --head`, or set cluster.address)")
    host, _, port = where.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise LaunchError(f"cluster.address must be auto, host:port or ray://host:port, "
                          f"got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), PROBE_TIMEOUT).close()
    except OSError as error:
        raise LaunchError(f"cannot reach the Ray cluster at {where}: {error}") from None


def _drain(fd: int, limit: int) -> tuple[bytes, bool]:
    """What is readable on ``fd`` now (at most ``limit``), and whether its writer closed
    it."""
    chunks: list[bytes] = []
    taken = 0
    while taken < limit:
        try:
            chunk = os.read(fd, min(65536, limit - taken))
        except BlockingIOError:
            break
        except OSError:
            return b"".join(chunks), True
        if not chunk:
            return b"".join(chunks), True
        chunks.append(chunk)
        taken += len(chunk)
    return b"".join(chunks), False


def _pour(remote: _Remote) -> None:
    """Write what the agent said into the supervisor's pipe, as much as it takes; close
    the pipe once the agent's output ended and all of it is through."""
    if remote.stdout is None:
        remote.said.clear()
        return
    if remote.said:
        try:
            written = os.write(remote.stdout, remote.said)
            del remote.said[:written]
        except BlockingIOError:
            pass
        except OSError:  # the supervisor closed its end: nobody will read it
            remote.said.clear()
    if remote.ended and not remote.said:
        _close_fds(remote.stdout)
        remote.stdout = None


def _keep_genome(directory: Path, data: bytes) -> None:
    """An agent's genome rewritten on its node, into its directory on the head (as the
    agent would have written it there: atomically)."""
    path = directory / GENOME
    with contextlib.suppress(OSError):
        if path.read_bytes() == data:
            return
    with contextlib.suppress(OSError):  # a directory gone with its dead agent
        atomic_write(path, data)


def _close_fds(*fds: int) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
