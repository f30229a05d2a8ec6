"""Stage of a pass: agents' proposals of new genes, vetted, tried, and published.

An agent proposes a module (``{"type": "propose", "name": ..., "source": ...}``,
bounded in size and in number per agent and generation). Each pass, what was heard
is stored with its author; every proposal is vetted statically (``core/vetting.py``:
never imported here); one vetted proposal at most is then tried in the agents' sandbox
(``operations/trial.py``) on held-out tasks of the environment, against the same tasks
answered by every gene of the newest template version. It is accepted only if it is
new (some function answers differently from every existing gene) and useful (it solves
``innovation.min_solved`` tasks that no existing gene solves, with at least
``innovation.min_precision`` of its answers right). Accepted code is written, in its
normalised form and with its provenance in a header, into ``agent_template/`` as a new
module: the next pass takes it as a new template version, and mutation, inheritance
and selection do the rest.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import queue
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from evolve_ai._linux import name_thread
from evolve_ai.core import vetting
from evolve_ai.environments import Environment
from evolve_ai.errors import ConfigError
from evolve_ai.operations.population import Population
from evolve_ai.operations.trial import Outcome, TrialFailed, Trials
from evolve_ai.plugins import load_plugin
from evolve_ai.services import logs
from evolve_ai.services.config import Config
from evolve_ai.services.files import atomic_write
from evolve_ai.services.store import Store
from evolve_ai.services.supervisor import Supervisor
from evolve_ai.services.workspace import Workspace

MAX_NAME = 40
MAX_PENDING = 100  # proposals waiting for a trial; more are refused until they are tried
GENERATED = 5  # proposals taken from one run of a generator plug-in
NAME = re.compile(rf"[a-z][a-z0-9_]{{0,{MAX_NAME - 1}}}")
PACKAGE = "src/agent/"
PREFIX = "invented_"


@dataclass(frozen=True, slots=True)
class Heard:
    """A proposal as it arrived, before anything was checked."""

    agent: str
    generation: int
    name: object
    source: object
    time: float


@dataclass(frozen=True, slots=True)
class Verdict:
    accepted: bool
    reason: str
    figures: dict[str, Any]


class BaselineFailed(TrialFailed):
    """The template's own genes could not be tried: no proposal can be judged."""


class Innovation:
    def __init__(self, workspace: Workspace, config: Config, population: Population,
                 supervisor: Supervisor, environment: Environment) -> None:
        self.workspace = workspace
        self.config = config
        self.population = population
        self.supervisor = supervisor
        self.environment = environment
        # agent -> (its pid, what it was told): told again when either changes
        self._told: dict[str, tuple[int | None, bool, int, int]] = {}
        self.log = logs.get_logger(command="life-cycle")
        self.trials = Trials(workspace, config)
        self._heard: list[Heard] = []
        self._sent: dict[str, int] = {}  # proposals per agent in the open generation
        self._generation = -1
        self._refused_rate = 0  # proposals over the per-agent budget, since the last pass
        # The newest version's genes on the held-out tasks: (fingerprint, tasks, answers).
        self._baseline: tuple[str, list[Any], Outcome] | None = None
        self._generator = _load_generator(config)
        self._generating: threading.Thread | None = None
        self._generated = -1  # the generation the generator last ran for
        self._from_generator: queue.SimpleQueue[Heard] = queue.SimpleQueue()
        self._secret = os.urandom(16).hex()  # this run's held-out tasks
        self._baseline_failed = ""  # said once

    # -- heard between passes -------------------------------------------------------------

    def on_message(self, agent_id: str, message: dict[str, Any]) -> None:
        if message.get("type") != "propose" or not self.config.innovation.enabled:
            return
        if self.population.generation != self._generation:
            self._generation, self._sent = self.population.generation, {}
        sent = self._sent.get(agent_id, 0)
        if sent >= self.config.innovation.per_agent:
            self._refused_rate += 1
            return
        self._sent[agent_id] = sent + 1
        self._heard.append(Heard(agent_id, self.population.generation, message.get("name"),
                                 message.get("source"), time.time()))

    # -- the pass's stage -------------------------------------------------------------------

    def step(self, store: Store) -> None:
        """Store and vet what was heard; try one vetted proposal if one waits."""
        if self._refused_rate:
            self.log.warning("proposals_over_budget", count=self._refused_rate,
                             per_agent=self.config.innovation.per_agent)
            self._refused_rate = 0
        heard, self._heard = self._heard, []
        while not self._from_generator.empty():
            heard.append(self._from_generator.get())
        for proposal in heard:
            self._receive(store, proposal)
        self._tell()
        self._generate()
        if self.config.innovation.enabled:
            pending = store.proposals_pending(1)
            if pending:
                self._try(store, pending[0])

    def close(self) -> None:
        self.trials.close()

    def reload(self, config: Config, environment: Environment) -> None:
        """SIGHUP: new settings, environment and generator (a generator that no longer
        loads is said, and the old one kept)."""
        self.config, self.environment = config, environment
        self.trials.config = config
        try:
            self._generator = _load_generator(config)
        except ConfigError as error:
            self.log.error("generator_unavailable", error=str(error))
        self._baseline = None  # other tasks, perhaps

    def _generate(self) -> None:
        """Every ``innovation.generator_every`` generations, the ``innovation.generator``
        plug-in, on a thread of its own (it may take long: a language model, say), is
        shown held-out tasks that no gene solves; what it returns is proposed like an
        agent's proposal, vetted and tried the same way."""
        settings = self.config.innovation
        generation = self.population.generation
        if (self._generator is None or not settings.enabled
                or generation % settings.generator_every or generation == self._generated
                or (self._generating is not None and self._generating.is_alive())):
            return
        self._generated = generation
        try:
            tasks, baseline = self._baseline_answers()
        except TrialFailed as failed:
            self.log.warning("generator_skipped", error=str(failed))
            return
        unsolved = [task for i, task in enumerate(tasks)
                    if not any(self._right(task, row[i]) for row in baseline.answers.values())]
        template = self.population.template
        sources = {} if template is None else {
            path: data.decode("utf-8", errors="replace")
            for path, data in template.files.items() if path.startswith(PACKAGE)}
        shown = [{"data": task.data, "expected": task.expected} for task in unsolved[:50]]
        author, generator = settings.generator, self._generator

        def run() -> None:
            name_thread()
            try:
                made = list(itertools.islice(generator(shown, sources), GENERATED))
            except Exception as error:  # a plug-in's failure is said, never a stop
                self.log.error("generator_failed", generator=author, error=str(error)[:300])
                return
            for item in made:
                name, source = item if isinstance(item, tuple) and len(item) == 2 else (
                    None, None)
                self._from_generator.put(Heard(f"generator:{author}", generation, name,
                                               source, time.time()))

        self._generating = threading.Thread(target=run, name="evolve-generator",
                                            daemon=True)
        self._generating.start()

    def _tell(self) -> None:
        """Each running agent, once per process: whether proposals are heard, and how
        often its inventor may run (``innovation.every`` feedbacks)."""
        settings = self.config.innovation
        message = {"type": "innovation", "enabled": settings.enabled, "every": settings.every,
                   "max_bytes": settings.max_bytes}
        told = {}
        for agent_id in self.supervisor.running():
            info = self.supervisor.info(agent_id)
            now = (None if info is None else info.pid, settings.enabled, settings.every,
                   settings.max_bytes)
            before = self._told.get(agent_id)
            # Agents never told of it are not told it is off: silence means the same.
            if before != now and (settings.enabled or before is not None):
                self.supervisor.send(agent_id, message)
            told[agent_id] = now
        self._told = told if settings.enabled else {}

    def _receive(self, store: Store, heard: Heard) -> None:
        name = heard.name if isinstance(heard.name, str) else ""
        source = heard.source if isinstance(heard.source, str) else ""
        limit = self.config.innovation.max_bytes
        kept = source.encode("utf-8", errors="replace")[:limit + 1].decode(
            "utf-8", errors="replace")  # never more than the limit is stored
        reason = None
        if not isinstance(heard.name, str) or not isinstance(heard.source, str):
            reason = "malformed: name and source must be strings"
        elif not NAME.fullmatch(name):
            # Stored escaped: any string (a lone surrogate...) is safe to store and show.
            name = name[:MAX_NAME].encode("ascii", "backslashreplace").decode()
            reason = f"name {name!r}: lower-case letters, digits and _, at most {MAX_NAME}"
        digest = hashlib.sha256(kept.encode()).hexdigest()
        normalised = None
        if reason is None and store.proposals_count("pending") >= MAX_PENDING:
            reason = f"{MAX_PENDING} proposals wait already: try again later"
        if reason is None:
            try:
                vetted = vetting.vet(source, limit)
            except vetting.Refused as refused:
                reason = str(refused)
            else:
                normalised = vetted.source
                digest = hashlib.sha256(normalised.encode()).hexdigest()
                earlier = store.proposal_with(digest)
                if earlier is not None:
                    reason = f"the same code as proposal {earlier}"
        number = store.add_proposal(heard.agent, heard.generation, name[:MAX_NAME],
                                    normalised or kept, digest, heard.time, reason)
        agent = None if heard.agent.startswith("generator:") else heard.agent
        if reason is None:
            self.population.event("proposed", agent, proposal=number, name=name)
        else:
            self.population.event("proposal_rejected", agent, proposal=number, reason=reason)

    def _try(self, store: Store, proposal: dict[str, Any]) -> None:
        try:
            verdict = self._judge(proposal)
        except BaselineFailed as failed:  # not the proposal's fault: it waits
            if self._baseline_failed != str(failed):
                self._baseline_failed = str(failed)
                self.log.error("trial_baseline_failed", error=str(failed))
            return
        except TrialFailed as failed:
            verdict = Verdict(False, f"trial: {failed}", {})
        except vetting.Refused as refused:  # limits lowered since it was heard
            verdict = Verdict(False, str(refused), {})
        module = self._publish(proposal, verdict) if verdict.accepted else None
        store.decide_proposal(proposal["id"], module is not None,
                              verdict.reason if module is not None or not verdict.accepted
                              else "a module of that name exists", module,
                              verdict.figures, time.time())
        agent = None if proposal["agent"].startswith("generator:") else proposal["agent"]
        if module is not None:
            self.population.event("innovation_accepted", agent, proposal=proposal["id"],
                                  module=module, **verdict.figures)
        else:
            self.population.event("proposal_rejected", agent, proposal=proposal["id"],
                                  reason=verdict.reason)

    def _judge(self, proposal: dict[str, Any]) -> Verdict:
        """Accepted when every function of the module is new and useful: all of them
        become genes, so none is let in unchecked."""
        settings = self.config.innovation
        vetted = vetting.vet(proposal["source"], 4 * settings.max_bytes)  # normalised
        tasks, baseline = self._baseline_answers()
        path = f"{PREFIX}candidate.py"
        genes = [f"agent.{PREFIX}candidate:{name}" for name in vetted.functions]
        outcome = self.trials.run({path: vetted.source.encode()}, genes,
                                  [task.data for task in tasks], settings.trial_seconds)
        solved_before = [any(self._right(task, row[i]) for row in baseline.answers.values())
                         for i, task in enumerate(tasks)]
        passed: list[dict[str, Any]] = []
        reasons = []
        for gene in genes:
            row = outcome.answers.get(gene, [None] * len(tasks))
            if len(row) != len(tasks):
                raise TrialFailed("the trial's answer is malformed")
            name = gene.rpartition(":")[2]
            if gene in outcome.errors:
                reasons.append(f"{name}: {outcome.errors[gene]}")
                continue
            answered = [i for i, value in enumerate(row) if value is not None]
            right = [i for i in answered if self._right(tasks[i], row[i])]
            unique = [i for i in right if not solved_before[i]]
            precision = len(right) / len(answered) if answered else 0.0
            same = [other for other, theirs in baseline.answers.items() if list(theirs) == row]
            figures = {"function": name, "tasks": len(tasks), "answered": len(answered),
                       "solved": len(right), "solved_alone": len(unique),
                       "precision": round(precision, 4),
                       "trial_seconds": round(outcome.seconds, 3)}
            if same:
                reasons.append(f"{name}: behaves as {same[0].partition(':')[2]} does")
            elif len(unique) < settings.min_solved:
                reasons.append(f"{name}: solves {len(unique)} tasks no gene solves "
                               f"(needs {settings.min_solved})")
            elif precision < settings.min_precision:
                reasons.append(f"{name}: {precision:.0%} of its answers right "
                               f"(needs {settings.min_precision:.0%})")
            else:
                passed.append(figures)
        if reasons or not passed:
            return Verdict(False, "; ".join(reasons) or "no function", {})
        for gene in genes:  # the next proposal is new only if it differs from these too
            baseline.answers[f"{proposal['digest'][:8]}:{gene}"] = outcome.answers[gene]
        return Verdict(True, "new and useful",
                       max(passed, key=lambda figures: figures["solved_alone"]))

    def _right(self, task: Any, value: Any) -> bool:
        if value is None:
            return False
        try:
            return float(self.environment.score(task, value)) >= 0.999
        except Exception:  # an environment plug-in's bug is not the proposal's merit
            return False

    def _baseline_answers(self) -> tuple[list[Any], Outcome]:
        """Held-out tasks (a stream of their own, fixed per version) and every gene of the
        newest version on them; computed once per version, in the sandbox too."""
        template = self.population.template
        if template is None:
            raise TrialFailed("no template version yet")
        fingerprint = template.catalogue.fingerprint
        if self._baseline is None or self._baseline[0] != fingerprint:
            # A seed agents cannot know (not even from the store, which they can read):
            # tasks they could have learnt by heart are not held out.
            rng = random.Random(f"trial:{self._secret}:{fingerprint}")
            tasks = list(self.environment.make_tasks(rng, self.config.innovation.trial_tasks))
            modules = {path.removeprefix(PACKAGE): data for path, data in template.files.items()
                       if path.startswith(PACKAGE) and path.endswith(".py")
                       and path not in (f"{PACKAGE}main.py", f"{PACKAGE}__init__.py")}
            genes = [f"agent.{_dotted(path)}:{name}"
                     for path, names in template.catalogue.genes().items() for name in names]
            try:
                outcome = self.trials.run(modules, genes, [task.data for task in tasks],
                                          max(self.config.innovation.trial_seconds, 10.0))
            except TrialFailed as failed:
                raise BaselineFailed(f"the template's own genes on trial: {failed}") from None
            self._baseline = (fingerprint, tasks, outcome)
        return self._baseline[1], self._baseline[2]

    def _publish(self, proposal: dict[str, Any], verdict: Verdict) -> str | None:
        """The module, with its provenance, in ``agent_template/``: a new version."""
        author = self.population.agents.get(proposal["agent"])
        figures = verdict.figures
        stem = f"{PREFIX}{proposal['name']}_{proposal['digest'][:8]}"
        path = f"{PACKAGE}{stem}.py"
        header = (
            f"# Invented by agent {proposal['agent']} in generation {proposal['generation']}"
            f" (template {author.template if author else '?'}), proposal {proposal['id']};\n"
            f"# accepted by evolve on {time.strftime('%Y-%m-%d %H:%M:%S')}: "
            f"{figures['function']} solved {figures['solved']} of {figures['tasks']} "
            f"held-out tasks, {figures['solved_alone']} that no other gene solved, "
            f"{figures['precision']:.0%} of its answers right.\n"
            "# Normalised from the proposal's syntax tree (comments and layout are not kept).\n"
        )
        target = self.workspace.template_dir / path
        if target.exists():  # never overwritten: the digest names its content
            return None
        atomic_write(target, (header + proposal["source"]).encode())
        return path


def _load_generator(config: Config) -> Callable[..., Iterable[Any]] | None:
    reference = config.innovation.generator
    if not reference:
        return None
    generator: Callable[..., Iterable[Any]] = load_plugin(reference, "evolve_ai.generators",
                                                          "innovation.generator")
    return generator


def _dotted(path: str) -> str:
    return path.removeprefix(PACKAGE).removesuffix(".py").replace("/", ".")


def adoption(store: Store, modules: Sequence[str]) -> dict[str, float]:
    """Per published module, the share of the active agents expressing one of its genes
    at the last closed generation (from the gene shares the dashboard draws)."""
    shares = store.gene_shares()
    if not shares:
        return {}
    last = max(generation for generation, _, _ in shares)
    found: dict[str, float] = {}
    for generation, gene, share in shares:
        path = gene.partition(":")[0]
        if generation == last and path in modules:
            found[path] = max(found.get(path, 0.0), share)
    return found
