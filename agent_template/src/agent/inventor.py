"""The agent's inventor: new genes written from the tasks it cannot answer.

Core module: always active, never a gene. Used only when the orchestrator says that it
hears proposals (an `innovation` message, docs/protocol.md). It keeps the last tasks
that no expressed gene answered and, every `every` feedbacks, searches a small grammar
for a rule `t[k] = f(a, b, c, k)` (a, b, c: the three terms before; k: the position)
that holds at every shown step of several of those tasks. A rule may be split on the
parity of `a`, one form per branch, which is how a rule like Collatz's is found. A rule
found is sent once as the source of one gene function; the orchestrator vets it, tries
it on tasks of its own and decides. Pure and cheap: a few hundred forms, a few dozen
tasks, no import beyond the standard library.
"""

import hashlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator

__evolve__ = "core"

KEEP = 48  # unanswered tasks remembered, the newest
MIN_TASKS = 3  # a rule must hold on this many of them, at every step
MIN_TERMS = 5  # shorter tasks show too few steps to tell a rule

Form = tuple[str, Callable[[int, int, int, int], int]]
Step = tuple[int, int, int, int, int]  # a, b, c, k, and the term that followed


def _forms() -> list[Form]:
    """Small expressions of a, b, c, k: linear ones, halves and thirds, products."""
    names = ("a", "b", "c", "k")
    forms: list[Form] = []
    for index, name in enumerate(names):
        for p in (-3, -2, -1, 1, 2, 3):
            for r in range(-3, 4):
                text = f"{p} * {name} + {r}" if r else f"{p} * {name}"
                forms.append((text, _linear(index, p, r)))
        for d in (2, 3):
            for r in range(-2, 3):
                text = f"{name} // {d} + {r}" if r else f"{name} // {d}"
                forms.append((text, _divided(index, d, r)))
    for i, left in enumerate(names):
        for j in range(i, len(names)):
            for sign in (1, -1):
                text = f"{left} + {names[j]}" if sign > 0 else f"{left} - {names[j]}"
                forms.append((text, _pair(i, j, sign)))
            forms.append((f"{left} * {names[j]}", _product(i, j)))
    return forms


def _linear(index: int, p: int, r: int) -> Callable[[int, int, int, int], int]:
    return lambda a, b, c, k: p * (a, b, c, k)[index] + r


def _divided(index: int, d: int, r: int) -> Callable[[int, int, int, int], int]:
    return lambda a, b, c, k: (a, b, c, k)[index] // d + r


def _pair(i: int, j: int, sign: int) -> Callable[[int, int, int, int], int]:
    return lambda a, b, c, k: (a, b, c, k)[i] + sign * (a, b, c, k)[j]


def _product(i: int, j: int) -> Callable[[int, int, int, int], int]:
    return lambda a, b, c, k: (a, b, c, k)[i] * (a, b, c, k)[j]


FORMS = _forms()


def steps(terms: list[int]) -> list[Step]:
    return [(terms[k - 1], terms[k - 2], terms[k - 3], k, terms[k])
            for k in range(3, len(terms))]


def _holds(form: Form, chosen: Iterable[Step]) -> bool:
    function = form[1]
    return all(function(a, b, c, k) == after for a, b, c, k, after in chosen)


class Inventor:
    def __init__(self, every: int) -> None:
        self.every = max(1, every)
        self.unanswered: deque[list[int]] = deque(maxlen=KEEP)
        self.proposed: set[str] = set()
        self.feedbacks = 0

    def remember(self, terms: list[int]) -> None:
        """A task no expressed gene answered."""
        if len(terms) >= MIN_TERMS and terms not in self.unanswered:
            self.unanswered.append(list(terms))

    def tick(self) -> tuple[str, str] | None:
        """Count a feedback; every `every`, search: a (name, source) to propose, or None."""
        self.feedbacks += 1
        if self.feedbacks % self.every:
            return None
        return self.invent()

    def invent(self) -> tuple[str, str] | None:
        tasks = [steps(terms) for terms in self.unanswered]
        if len(tasks) < MIN_TASKS:
            return None
        for name, source in self._candidates(tasks):
            digest = hashlib.sha256(source.encode()).hexdigest()[:8]
            if digest not in self.proposed:  # each rule is proposed once
                self.proposed.add(digest)
                return f"{name}_{digest}", source
        return None

    def _candidates(self, tasks: list[list[Step]]) -> Iterator[tuple[str, str]]:
        """Plain rules that hold on enough tasks, then the best rule split by parity."""
        for form in FORMS:
            if sum(1 for task in tasks if _holds(form, task)) >= MIN_TASKS:
                yield "rule", _source("rule", form[0], None)
        split = self._by_parity(tasks)
        if split is not None:
            yield split

    def _by_parity(self, tasks: list[list[Step]]) -> tuple[str, str] | None:
        """The pair of forms (a even, a odd) that holds on the most tasks (each task
        showing both kinds of step), if on MIN_TASKS at least."""
        mixed = [task for task in tasks
                 if any(s[0] % 2 == 0 for s in task) and any(s[0] % 2 for s in task)]
        if len(mixed) < MIN_TASKS:
            return None
        even = [{i for i, task in enumerate(mixed)
                 if _holds(form, [s for s in task if s[0] % 2 == 0])} for form in FORMS]
        odd = [{i for i, task in enumerate(mixed)
                if _holds(form, [s for s in task if s[0] % 2])} for form in FORMS]
        best: tuple[int, int, int] | None = None
        for e, even_fits in enumerate(even):
            if len(even_fits) < MIN_TASKS:
                continue
            for o, odd_fits in enumerate(odd):
                both = len(even_fits & odd_fits)
                if both >= MIN_TASKS and (best is None or both > best[0]):
                    best = (both, e, o)
        if best is None:
            return None
        return "parity_rule", _source("parity_rule", FORMS[best[1]][0], FORMS[best[2]][0])


def _source(name: str, even: str, odd: str | None) -> str:
    """One gene function: the rule checked at every shown step, then applied once."""
    rule = f"({even})" if odd is None else f"({even}) if a % 2 == 0 else ({odd})"
    said = (f"the next term is {even}" if odd is None
            else f"the next term is {even} after an even term, {odd} after an odd one")
    return (
        f'"""Invented by an agent: {said} (a, b, c: the last three terms; k: the '
        'position)."""\n\n\n'
        f"def {name}(terms):\n"
        f"    if len(terms) < {MIN_TERMS}:\n"
        "        return None\n"
        "    for k in range(3, len(terms)):\n"
        "        a, b, c = terms[k - 1], terms[k - 2], terms[k - 3]\n"
        f"        if ({rule}) != terms[k]:\n"
        "            return None\n"
        "    k = len(terms)\n"
        "    a, b, c = terms[-1], terms[-2], terms[-3]\n"
        f"    return {rule}\n"
    )
