"""Stage 5 of a pass: tasks to running agents, their answers scored, fitness fed back.

Task ids are the orchestrator's: an answer to an unknown, already answered or
expired task is worth nothing, and a late one scores 0. Fitness is the
environment's verdict on an agent's last ``evaluation.window`` scores; it is sent
back once a batch of tasks is settled, so the agent can steer its own mutation.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import Any

from evolve_ai.environments import Environment, Task
from evolve_ai.operations.population import LiveAgent, Population
from evolve_ai.services import logs
from evolve_ai.services.config import Config
from evolve_ai.services.supervisor import Supervisor


class Evaluator:
    def __init__(self, config: Config, population: Population, supervisor: Supervisor,
                 environment: Environment, rng: random.Random) -> None:
        self.config = config
        self.population = population
        self.supervisor = supervisor
        self.environment = environment
        self.rng = rng
        self.log = logs.get_logger(command="life-cycle")
        self.totals = {"sent": 0, "answered": 0, "late": 0}  # tasks, since the start

    def send_tasks(self, now: float) -> None:
        """A batch of tasks to each running agent that has none outstanding."""
        count = self.config.evaluation.tasks_per_pass
        if count == 0:
            return
        deadline = now + self.config.evaluation.answer_timeout
        for agent_id in self.supervisor.running():
            agent = self.population.agents.get(agent_id)
            if agent is None or agent.status != "active" or agent.pending:
                continue
            tasks = self.environment.make_tasks(self.rng, count)
            if self.supervisor.send(agent_id, *({"type": "task", "id": task.id,
                                                 "data": task.data} for task in tasks)):
                agent.pending.update((task.id, (task, deadline)) for task in tasks)
                self.totals["sent"] += len(tasks)

    def on_message(self, agent_id: str, message: dict[str, Any]) -> None:
        """An agent said something after hello (the supervisor's message handler)."""
        agent = self.population.agents.get(agent_id)
        if agent is None or message["type"] != "answer":
            return  # "mutated" is only a hint: the next scan finds out what really changed
        task_id = message.get("id")
        entry = agent.pending.pop(task_id, None) if isinstance(task_id, str) else None
        if entry is None:
            return  # late, duplicate or invented: worth nothing
        task, deadline = entry
        late = self.supervisor.clock() > deadline
        self.totals["late" if late else "answered"] += 1
        self._score(agent, 0.0 if late else self._safe_score(task, message.get("value")))

    def expire(self, now: float) -> None:
        """Tasks past their deadline score 0."""
        for agent in self.population.agents.values():
            expired = [tid for tid, (_, deadline) in agent.pending.items() if now > deadline]
            for task_id in expired:
                del agent.pending[task_id]
                self.totals["late"] += 1
                self._score(agent, 0.0)

    def drain(self, stopping: Callable[[], bool]) -> None:
        """Give the tasks sent this pass their time to be answered (``--once``)."""
        timeout = self.config.evaluation.answer_timeout
        deadline = time.monotonic() + timeout
        while any(a.pending for a in self.population.agents.values()) \
                and time.monotonic() < deadline and not stopping():
            self.supervisor.wait(min(0.05, deadline - time.monotonic()))
        self.expire(time.monotonic() + timeout)

    def _safe_score(self, task: Task, value: object) -> float:
        try:
            score = float(self.environment.score(task, value))
        except Exception as exc:  # a plug-in environment may fail; the agent is not to blame
            self.log.error("score_failed", error=f"{type(exc).__name__}: {exc}")
            return 0.0
        return min(1.0, max(0.0, score)) if math.isfinite(score) else 0.0

    def _score(self, agent: LiveAgent, score: float) -> None:
        agent.scores.append(score)
        while len(agent.scores) > self.config.evaluation.window:
            agent.scores.popleft()
        agent.evaluations += 1
        agent.dirty = True
        self.population.scored += 1
        if not agent.pending:
            agent.fitness = self.environment.fitness(list(agent.scores), agent.active_functions)
            agent.measured = len(agent.scores)
            agent.unmeasured_rewrites = 0
            self.supervisor.send(agent.id, {"type": "feedback", "fitness": agent.fitness})
