"""``evolve.toml``: the schema (typed, documented, checked), the commented default file, loading.

The schema is the dataclasses below: each field carries its default, a one-line
doc written into the generated file, and a check. Loading rejects unknown keys,
wrong types and bad values with one line naming the key and the file.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import math
import os
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlkit
import tomlkit.exceptions
from tomlkit.container import Container
from tomlkit.items import Table

from evolve_ai import environments, plugins
from evolve_ai.core.selection import builtins as selection_builtins
from evolve_ai.errors import ConfigError
from evolve_ai.services.files import atomic_write

Check = Callable[[Any], str | None]  # returns what is wrong, or None

PLUGIN_RE = re.compile(r"^[A-Za-z_][\w.]*(:[A-Za-z_][\w.]*)?$")
STRATEGIES = tuple(selection_builtins.BUILTIN)
ENVIRONMENTS = tuple(environments.BUILTIN)
BACKENDS = ("local", "ray")


def _positive(value: Any) -> str | None:
    return None if value > 0 else "must be > 0"


def _non_negative(value: Any) -> str | None:
    return None if value >= 0 else "must be >= 0"


def _plugin_of(group: str, builtins: tuple[str, ...]) -> Check:
    """A check for a plug-in reference: a built-in, a registered entry point, or module:attr."""

    def check(value: Any) -> str | None:
        if not PLUGIN_RE.match(value):
            return "must be a name or 'module:attribute'"
        if ":" in value or value in builtins:
            return None
        if value in {ep.name for ep in importlib.metadata.entry_points(group=group)}:
            return None
        return f"must be one of {', '.join(builtins)}, an entry point of {group}, or module:attr"

    return check


def _fraction(value: Any) -> str | None:
    return None if 0.0 <= value <= 1.0 else "must be between 0 and 1"


def _optional_plugin(value: Any) -> str | None:
    return None if value == "" or PLUGIN_RE.match(value) else "must be empty or module:attr"


def _plugins(value: Any) -> str | None:
    bad = next((item for item in value if not PLUGIN_RE.match(item)), None)
    return None if bad is None else f"has {bad!r}, not a name or 'module:attribute'"


def _key(default: Any, doc: str, check: Check | None = None) -> Any:
    if isinstance(default, tuple):
        return field(default_factory=lambda: default, metadata={"doc": doc, "check": check})
    return field(default=default, metadata={"doc": doc, "check": check})


@dataclass(frozen=True, slots=True)
class PopulationSection:
    size: int = _key(100, "number of live agents that selection keeps (init sets it)",
                     _positive)
    min: int = _key(0, "fewest runnable agents before extinction is declared; "
                       "0 means a tenth of size, at least 1", _non_negative)
    on_extinction: str = _key("reseed", "below min: reseed (fresh random founders from the "
                                        "newest template version) or stop (exit 1)",
                              lambda v: None if v in ("reseed", "stop")
                              else "must be \"reseed\" or \"stop\"")

    @property
    def floor(self) -> int:
        """The effective ``min``."""
        return self.min or max(1, self.size // 10)


@dataclass(frozen=True, slots=True)
class LifecycleSection:
    interval: float = _key(1.0, "seconds slept between passes", _non_negative)
    workers: int = _key(0, "worker processes for chunked work; 0 means the CPU count",
                        _non_negative)
    chunk_size: int = _key(100, "agents per chunk of work handed to a worker", _positive)
    max_running: int = _key(1000, "agent processes alive at once; above it agents take turns",
                            _positive)
    turn_passes: int = _key(12, "passes an agent runs before yielding its place (max_running)",
                            _positive)


@dataclass(frozen=True, slots=True)
class SupervisorSection:
    max_restarts: int = _key(5, "consecutive crashes before an agent is disabled", _non_negative)
    backoff_initial: float = _key(1.0, "seconds before the first restart after a crash",
                                  _positive)
    backoff_max: float = _key(60.0, "ceiling of the restart delay, which doubles per crash",
                              _positive)
    stop_timeout: float = _key(5.0, "seconds between the polite stop and the kill", _positive)
    hello_timeout: float = _key(10.0, "seconds a started agent has to say hello", _positive)
    stable_after: float = _key(10.0, "seconds of running that reset the crash count", _positive)


@dataclass(frozen=True, slots=True)
class LimitsSection:
    memory_mb: int = _key(256, "address space of each agent process, and resident memory of "
                               "all of an agent's processes together, MiB", _positive)
    cpu_seconds: int = _key(3600, "CPU time of each agent process, and of all of an agent's "
                                  "processes together, seconds", _positive)
    open_files: int = _key(64, "open-file limit of each agent process", _positive)
    file_size_mb: int = _key(16, "largest file an agent process may write, MiB", _positive)
    processes: int = _key(8, "processes an agent may run at once (its own included)", _positive)
    disk_mb: int = _key(64, "what an agent's directory may hold, MiB (checked each pass)",
                        _positive)
    files: int = _key(1000, "files and directories an agent's directory may hold "
                            "(checked each pass)", _positive)


@dataclass(frozen=True, slots=True)
class EvaluationSection:
    tasks_per_pass: int = _key(16, "tasks sent to each running agent per pass", _non_negative)
    window: int = _key(64, "most recent scores that make an agent's fitness", _positive)
    answer_timeout: float = _key(2.0, "seconds an agent has to answer a task", _positive)
    energy_cost: float = _key(0.045, "fitness lost per expressed function gene", _non_negative)


@dataclass(frozen=True, slots=True)
class SelectionSection:
    strategy: str = _key("truncation", "one of " + ", ".join(STRATEGIES) + ", or module:attr",
                         _plugin_of(selection_builtins.GROUP, STRATEGIES))
    every: int = _key(8, "passes per generation (one selection each)", _positive)
    survival: float = _key(0.5, "share of the evaluated population kept (truncation, tournament)",
                           _fraction)
    elite: int = _key(1, "best agents never chosen to die", _non_negative)
    tournament_size: int = _key(3, "contenders per tournament (tournament, parent choice)",
                                _positive)
    threshold: float = _key(0.2, "fitness below which agents die (threshold)", _fraction)
    min_evaluations: int = _key(8, "evaluations an agent needs before it can be selected against",
                                _non_negative)
    grace: int = _key(1, "generations a disabled or quarantined agent is kept before it dies",
                      _non_negative)
    metabolism: float = _key(0.25, "energy spent per generation (energy)", _non_negative)
    publish_elite: int = _key(5, "best genomes published to the commons each generation",
                              _non_negative)
    unmeasured_rewrites: int = _key(
        3, "genome rewrites in a row, none measured, after which an agent counts as fitness 0",
        _positive)


@dataclass(frozen=True, slots=True)
class SandboxSection:
    uid_base: int = _key(200_000, "first uid (and gid) agents run as, when evolve runs as root; "
                                  "0: as evolve's own", _non_negative)
    uids: int = _key(65_536, "how many uids from uid_base; an agent's is chosen by its id",
                     _positive)


@dataclass(frozen=True, slots=True)
class LogsSection:
    max_mb: int = _key(64, "size of logs/evolve.jsonl that makes it roll over, MiB", _positive)
    files: int = _key(3, "rolled-over copies of evolve.jsonl kept (evolve.jsonl.1 ...)",
                      _positive)
    event_generations: int = _key(100, "generations of events kept in the store", _positive)


def parse_listen(listen: str, key: str = "metrics.listen") -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) as (host, port); ConfigError, naming
    ``key``, otherwise (port 0: any free port)."""
    host, _, port = listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{key} must be host:port (e.g. 127.0.0.1:8080), got {listen!r}")
    return host, int(port)


def _listen(value: Any) -> str | None:
    try:
        if value != "":
            parse_listen(str(value))
    except ConfigError:
        return "must be host:port (e.g. 127.0.0.1:8080), or empty for none"
    return None


@dataclass(frozen=True, slots=True)
class MetricsSection:
    listen: str = _key("", "host:port of the Prometheus endpoint, e.g. 127.0.0.1:9464; "
                           "empty: none", _listen)


@dataclass(frozen=True, slots=True)
class ApiSection:
    listen: str = _key("127.0.0.1:9465", "host:port of evolve serve-api and dashboard",
                       _listen)
    token: str = _key("", "bearer token they require (needed off loopback)")


@dataclass(frozen=True, slots=True)
class BackupSection:
    every: int = _key(0, "generations between automatic backups (backups/); 0: none",
                      _non_negative)
    keep: int = _key(3, "automatic backups kept, the newest", _positive)


@dataclass(frozen=True, slots=True)
class InnovationSection:
    enabled: bool = _key(False, "hear agents' proposals of new genes, try them, publish the "
                                "good ones in agent_template/")
    every: int = _key(10, "feedbacks between two searches of an agent's inventor", _positive)
    per_agent: int = _key(1, "proposals an agent may make per generation", _positive)
    max_bytes: int = _key(8192, "largest proposal (bytes of source)", _positive)
    trial_tasks: int = _key(500, "held-out tasks a proposal is tried on", _positive)
    trial_seconds: float = _key(3.0, "time a trial may take before it is killed", _positive)
    min_solved: int = _key(5, "tasks no existing gene solves that a proposal must solve",
                           _positive)
    min_precision: float = _key(0.9, "share of a proposal's answers that must be right",
                                _fraction)
    generator: str = _key("", "module:attr of a generator of proposals run by evolve "
                              "(see docs/innovation.md); empty: none", _optional_plugin)
    generator_every: int = _key(5, "generations between two runs of the generator",
                                _positive)


def _backend(value: Any) -> str | None:
    return None if value in BACKENDS else "must be one of " + ", ".join(BACKENDS)


def _address(value: Any) -> str | None:
    host, _, port = value.removeprefix("ray://").rpartition(":")
    if value == "auto" or (host and port.isdigit() and 0 < int(port) < 65536):
        return None
    return "must be auto, host:port or ray://host:port"


@dataclass(frozen=True, slots=True)
class ClusterSection:
    backend: str = _key("local", "where agents run: local (a fork server here) or ray (a "
                                 "fork server on each node of a Ray cluster)", _backend)
    address: str = _key("auto", "the Ray cluster to join (ray): auto, host:port or "
                                "ray://host:port", _address)
    node_address: str = _key("", "this machine's address in the cluster (ray), e.g. "
                                 "127.0.0.1; empty: Ray's choice")
    agents_per_node: int = _key(0, "most agents on one node (ray); 0: no limit",
                                _non_negative)
    node_cpus: float = _key(0.0, "CPUs each node's actor reserves from Ray (ray)",
                            _non_negative)
    exchange_interval: float = _key(0.02, "seconds between two exchanges with each node "
                                          "(ray): how late a message may be", _positive)
    shared_files: bool = _key(True, "whether every node sees the workspace at the same path "
                                    "(ray); false: agents are laid out on their node")
    node_dir: str = _key("", "where nodes lay agents out when shared_files is false (ray); "
                             "empty: /var/tmp/evolve-nodes")


@dataclass(frozen=True, slots=True)
class Webhook:
    """One ``[[webhooks]]`` table: an endpoint and what it is sent."""

    url: str
    secret: str  # Standard Webhooks: "whsec_" + base64 of the key
    events: tuple[str, ...] = ("*",)  # event names, or "*" for all
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 5.0  # seconds for one delivery
    max_age: float = 86400.0  # seconds an event is retried before it is dropped
    batch: int = 1  # events per delivery (more than 1: one "batch" message holds them)

    def wants(self, kind: str) -> bool:
        return "*" in self.events or kind in self.events


WEBHOOK_EXAMPLE = """\
Webhooks: one [[webhooks]] table per endpoint; events are signed per the Standard
Webhooks specification and kept in the store until delivered (see the README).
[[webhooks]]
url = "https://example.org/evolve"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"   # base64 of the signing key
events = ["generation", "extinction", "reseeded"]  # or ["*"]
headers = { Authorization = "Bearer ..." }       # optional
timeout = 5.0                                    # seconds per delivery
max_age = 86400.0                                # seconds of retries, then dropped
batch = 1                                        # events per delivery, up to 1000"""


def _webhooks(value: Any, source: str) -> tuple[Webhook, ...]:
    """``[[webhooks]]`` tables, each checked; ConfigError names the table and key."""
    if not isinstance(value, list):
        raise ConfigError(f"{source}: webhooks must be [[webhooks]] tables")
    endpoints = []
    for index, table in enumerate(value):
        where = f"{source}: webhooks[{index}]"
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where} must be a table")
        unknown = sorted(set(table) - {f.name for f in dataclasses.fields(Webhook)})
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}")
        url, secret = table.get("url"), table.get("secret")
        if not isinstance(url, str) or not re.match(r"https?://[^/\s]+", url):
            raise ConfigError(f"{where}.url must be an http:// or https:// URL, got {url!r}")
        if not isinstance(secret, str) or not _is_secret(secret):
            raise ConfigError(f"{where}.secret must be whsec_ followed by base64 "
                              f"(Standard Webhooks), got {secret!r}")
        events = table.get("events", ["*"])
        if isinstance(events, str):
            events = [events]
        if not isinstance(events, list) or not events or not all(
                isinstance(e, str) and e for e in events):
            raise ConfigError(f"{where}.events must be a list of event names or \"*\"")
        headers = table.get("headers", {})
        if not isinstance(headers, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
            raise ConfigError(f"{where}.headers must be a table of strings")
        numbers = {}
        defaults = {f.name: f.default for f in dataclasses.fields(Webhook)}
        for key in ("timeout", "max_age"):
            number = table.get(key, defaults[key])
            if isinstance(number, bool) or not isinstance(number, int | float) or \
                    not math.isfinite(number) or number <= 0:
                raise ConfigError(f"{where}.{key} must be a positive number, got {number!r}")
            numbers[key] = float(number)
        batch = table.get("batch", 1)
        if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 1000:
            raise ConfigError(f"{where}.batch must be an integer from 1 to 1000, got {batch!r}")
        endpoints.append(Webhook(url, secret, tuple(events), tuple(sorted(headers.items())),
                                 batch=batch, **numbers))
    urls = [e.url for e in endpoints]
    if len(set(urls)) != len(urls):
        raise ConfigError(f"{source}: two [[webhooks]] tables have the same url")
    return tuple(endpoints)


def _is_secret(secret: str) -> bool:
    import base64
    import binascii

    body = secret.removeprefix("whsec_")
    try:
        return secret.startswith("whsec_") and bool(base64.b64decode(body + "==",
                                                                     validate=True))
    except (binascii.Error, ValueError):
        return False


@dataclass(frozen=True, slots=True)
class Config:
    environment: str = _key("sequences", "task environment: one of " + ", ".join(ENVIRONMENTS)
                            + ", or module:attr",
                            _plugin_of(environments.GROUP, ENVIRONMENTS))
    hooks: tuple[str, ...] = _key((), "module:attr callables notified of every event", _plugins)
    hook_timeout: float = _key(2.0, "seconds a hook may take before it is abandoned", _positive)
    population: PopulationSection = field(default_factory=PopulationSection)
    lifecycle: LifecycleSection = field(default_factory=LifecycleSection)
    supervisor: SupervisorSection = field(default_factory=SupervisorSection)
    limits: LimitsSection = field(default_factory=LimitsSection)
    selection: SelectionSection = field(default_factory=SelectionSection)
    evaluation: EvaluationSection = field(default_factory=EvaluationSection)
    sandbox: SandboxSection = field(default_factory=SandboxSection)
    logs: LogsSection = field(default_factory=LogsSection)
    backup: BackupSection = field(default_factory=BackupSection)
    innovation: InnovationSection = field(default_factory=InnovationSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    api: ApiSection = field(default_factory=ApiSection)
    cluster: ClusterSection = field(default_factory=ClusterSection)
    webhooks: tuple[Webhook, ...] = ()  # [[webhooks]] tables, see WEBHOOK_EXAMPLE

    @property
    def workers(self) -> int:
        """The effective worker count (0 in the file means one per CPU)."""
        return self.lifecycle.workers or (os.cpu_count() or 1)

    def with_overrides(self, overrides: Mapping[str, Any], source: str) -> Config:
        """A copy with dotted keys replaced (command-line options), checked like the file."""
        plain = to_plain(self)
        for dotted, value in overrides.items():
            section, _, name = dotted.rpartition(".")
            (plain[section] if section else plain)[name] = value
        return from_plain(plain, source)

    def check(self) -> None:
        if self.supervisor.backoff_max < self.supervisor.backoff_initial:
            raise ConfigError("supervisor.backoff_max must be >= supervisor.backoff_initial")


def _sections() -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(Config) if dataclasses.is_dataclass(f.default_factory)]


def _scalars(cls: type[Any]) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if "doc" in f.metadata]


def to_plain(config: Config) -> dict[str, Any]:
    plain: dict[str, Any] = {f.name: getattr(config, f.name) for f in _scalars(Config)}
    for section in _sections():
        plain[section.name] = dataclasses.asdict(getattr(config, section.name))
    if config.webhooks:
        plain["webhooks"] = [{**dataclasses.asdict(w), "events": list(w.events),
                              "headers": dict(w.headers)} for w in config.webhooks]
    return plain


def from_plain(plain: Mapping[str, Any], source: str) -> Config:
    """Build a Config from nested plain values, checking every key; ConfigError names it."""
    section_fields = {f.name: f for f in _sections()}
    section_classes: dict[str, type[Any]] = {
        f.name: f.default_factory for f in _sections()  # type: ignore[misc]
    }
    top: dict[str, Any] = {}
    webhooks = _webhooks(plain["webhooks"], source) if "webhooks" in plain else ()
    for name, value in plain.items():
        if name == "webhooks":
            continue
        if name in section_fields:
            cls = section_classes[name]
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: [{name}] must be a table")
            top[name] = cls(**_checked(cls, value, name + ".", source))
        else:
            top[name] = value
    config = Config(**_checked(Config, {k: v for k, v in top.items()
                                        if k not in section_fields}, "", source),
                    **{k: v for k, v in top.items() if k in section_fields},
                    webhooks=webhooks)
    try:
        config.check()
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return config


def _checked(cls: type[Any], values: Mapping[str, Any], prefix: str,
             source: str) -> dict[str, Any]:
    fields = {f.name: f for f in _scalars(cls)}
    hints = typing.get_type_hints(cls)
    result: dict[str, Any] = {}
    for name, value in values.items():
        spec = fields.get(name)
        if spec is None:
            raise ConfigError(f"{source}: unknown key '{prefix}{name}'")
        converted = _convert(hints[name], value)
        if converted is None:
            expected = _type_name(hints[name])
            raise ConfigError(f"{source}: {prefix}{name} must be {expected}, got {value!r}")
        check: Check | None = spec.metadata["check"]
        problem = check(converted) if check else None
        if problem:
            raise ConfigError(f"{source}: {prefix}{name} {problem}, got {value!r}")
        result[name] = converted
    return result


def _convert(hint: Any, value: Any) -> Any:
    if hint is bool:
        return value if isinstance(value, bool) else None
    if hint is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return float(value) if ok and math.isfinite(value) else None
    if hint is str:
        return value if isinstance(value, str) else None
    if typing.get_origin(hint) is tuple:
        ok = isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
        return tuple(value) if ok else None
    raise TypeError(f"unsupported config type {hint!r}")


def _type_name(hint: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    return names.get(hint, "a list of strings")


def load(path: Path) -> Config:
    """Read and check ``path``; a missing file means every default."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from None
    try:
        document = tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    config = from_plain(document.unwrap(), str(path))
    _check_plugins(config, path)
    return config


def _check_plugins(config: Config, path: Path) -> None:
    """Import every ``module:attr`` plug-in the file names, from the workspace directory
    (the file's) or the Python path: a name that does not import is refused now, by
    whichever command reads the file, not hours later by the life cycle."""
    named = [("environment", config.environment),
             ("selection.strategy", config.selection.strategy),
             ("innovation.generator", config.innovation.generator),
             *((f"hooks[{i}]", hook) for i, hook in enumerate(config.hooks))]
    named = [(key, value) for key, value in named if ":" in value]
    if not named:
        return
    plugins.search_in(path.parent)
    for key, reference in named:
        try:
            plugins.load_plugin(reference, "", key)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc} (plug-ins are imported from {path.parent} "
                              "and the Python path)") from None


def render_default() -> str:
    """The commented ``evolve.toml`` that the first ``init`` writes: every key, every default."""
    doc = tomlkit.document()
    doc.add(tomlkit.comment("evolve configuration. Every key is shown with its default value."))
    doc.add(tomlkit.comment("Command-line options override these; unknown keys are errors."))
    doc.add(tomlkit.nl())
    defaults = Config()
    _add_keys(doc, Config, defaults)
    for section in _sections():
        table = tomlkit.table()
        _add_keys(table, section.default_factory, getattr(defaults, section.name))  # type: ignore[arg-type]
        doc.add(tomlkit.nl())
        doc.add(section.name, table)
    doc.add(tomlkit.nl())
    for line in WEBHOOK_EXAMPLE.splitlines():
        doc.add(tomlkit.comment(line))
    return tomlkit.dumps(doc)


def _add_keys(container: tomlkit.TOMLDocument | Table, cls: type[Any], values: Any) -> None:
    for spec in _scalars(cls):
        container.add(tomlkit.comment(spec.metadata["doc"]))
        value = getattr(values, spec.name)
        container.add(spec.name, list(value) if isinstance(value, tuple) else value)


def set_values(path: Path, values: Mapping[str, object]) -> None:
    """Set dotted keys in the TOML file ``path``, its formatting and comments kept.

    ``{"lifecycle.interval": 0.1, "hooks": ["mod:fn"]}`` sets a key of a table (made
    when missing) or a top-level key; ``None`` removes the key, if there. A missing file starts
    empty. The file is replaced atomically: a life cycle reloading it on SIGHUP reads
    the old text or the new one, never a mix.
    """
    try:
        document = tomlkit.parse(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        document = tomlkit.document()
    except (OSError, UnicodeDecodeError, tomlkit.exceptions.ParseError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from None
    for dotted, value in values.items():
        *sections, name = dotted.split(".")
        table: Container | Table = document
        for section in sections:
            if section not in table:
                table[section] = tomlkit.table()
            child = table[section]
            if not isinstance(child, Table):
                raise ConfigError(f"{path}: cannot set {dotted!r}: {section!r} is not a table")
            table = child
        if value is None:
            if name in table:
                del table[name]
        else:
            table[name] = value
    atomic_write(path, tomlkit.dumps(document).encode("utf-8"))
