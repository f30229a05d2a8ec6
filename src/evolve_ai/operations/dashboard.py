"""``evolve dashboard`` and ``evolve report``: the store as web pages.

The pages are rendered here (Jinja2, autoescaped: an agent's log and events are its
own words, hostile ones included) with their data as JSON beside them; the charts are
drawn in the browser by plotly.js, which the ``plotly`` package ships: nothing is
fetched from the internet, by the server or the page. The dashboard's pages poll their
own JSON to stay live while a life cycle runs; the report is the same views in one
file, plotly.js inline.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evolve_ai.errors import EvolveError, UnknownAgent
from evolve_ai.operations import inspect
from evolve_ai.operations.api import Raw
from evolve_ai.services.store import Store
from evolve_ai.services.workspace import Workspace

BEST = 10  # agents in the overview's table
REPORTED = 5  # agents given a section of their own in a report
DESCENDANTS = 60  # nodes of an agent's descendants tree at most
DEPTH = 3  # generations of descendants shown
ANCESTORS = 50  # the nearest ancestors shown
LOG_TAIL = 8192  # bytes of an agent's log shown
EVENTS = 50  # an agent's latest events shown


def overview(workspace: Workspace) -> dict[str, Any]:
    """The population, its history, gene expression and template versions."""
    data = inspect.status(workspace)
    cycle = data["life_cycle"]
    fitness = data["fitness"]
    with Store.open(workspace.db_path) as store:
        shares = store.gene_shares()
    generations = sorted({g for g, _, _ in shares})
    names = sorted({gene for _, gene, _ in shares})
    column = {g: i for i, g in enumerate(generations)}
    row = {name: i for i, name in enumerate(names)}
    grid: list[list[float | None]] = [[None] * len(generations) for _ in names]
    for generation, gene, share in shares:
        grid[row[gene]][column[generation]] = share
    versions = inspect.templates(workspace)["versions"]
    for version in versions:
        version["created_text"] = _when(version["created"])
    return {
        **data,
        "state": (f"life cycle running (pid {cycle['pid']}, since {_when(cycle['since'])})"
                  if cycle["running"] else "no life cycle running")
                 + f"; last pass {_when(cycle['last_pass'])}",
        "fitness_mean": _fmt(fitness["mean"]), "fitness_max": _fmt(fitness["max"]),
        "genes": {"generations": generations, "names": names, "share": grid,
                  "labels": _short_names(names)},
        "best": inspect.agents(workspace, "active", "fitness", BEST),
        "versions": versions,
    }


def agent(workspace: Workspace, agent_id: str) -> dict[str, Any]:
    """One agent: what ``show`` says, its lineage both ways, fitness history, log tail."""
    shown = inspect.show(workspace, agent_id)
    ancestry = inspect.lineage(workspace, shown["id"])["ancestry"]
    hidden = max(0, len(ancestry) - ANCESTORS)
    ancestry = ancestry[:ANCESTORS]  # itself first: the nearest ancestors are kept
    with Store.open(workspace.db_path) as store:
        history = store.fitness_history(shown["id"])
        descendants, cut = _descendants(store, shown["id"])
        events = store.events_of(shown["id"], EVENTS)
    genome = shown.get("genome") or {}
    genes = [{"path": g["path"], "active": bool(g["active"]),
              "functions": [name for name, on in g["functions"].items() if on]}
             for g in genome.get("files", [])]
    events.reverse()  # the newest first
    for event in events:
        event["time_text"] = _when(event["time"])
        event["details"] = " ".join(f"{k}={v}" for k, v in sorted(event["data"].items())
                                    if k != "level")[:300]
    return {**shown, "genome": None, "genes": genes, "mutations": genome.get("mutations", 0),
            "ancestry": ancestry, "ancestors_cut": hidden, "descendants": descendants,
            "descendants_cut": cut,
            "fitness_history": history, "events": events,
            "log_tail": _tail(workspace.agent_logs_dir / f"{shown['id']}.log")}


def _short_names(genes: list[str]) -> list[str]:
    """Gene names without the directory every one of them shares (``src/agent/``)."""
    paths = [gene.partition(":")[0] for gene in genes]
    if not paths:
        return []
    common = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    return [gene.removeprefix(common + "/") if common else gene for gene in genes]


def _descendants(store: Store, agent_id: str) -> tuple[list[dict[str, Any]], int]:
    """Its children, theirs... ``DEPTH`` generations down, ``DESCENDANTS`` nodes at most;
    and how many were left out."""
    budget = [DESCENDANTS]
    cut = [0]

    def below(parent: str, depth: int) -> list[dict[str, Any]]:
        nodes = []
        for child in store.children(parent):
            if budget[0] <= 0 or depth > DEPTH:
                cut[0] += 1
                continue
            budget[0] -= 1
            row = store.find(child)
            nodes.append({"id": row.id, "generation": row.generation, "status": row.status,
                          "fitness": row.fitness, "children": below(row.id, depth + 1)})
        return nodes

    return below(agent_id, 1), cut[0]


def _tail(path: Path) -> str:
    """The end of an agent's log: bounded, never following a link, bytes as text."""
    try:  # non-blocking: a FIFO put in its place must not hang the server's thread
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as file:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            return ""
        size = status.st_size
        file.seek(max(0, size - LOG_TAIL))
        return file.read(LOG_TAIL).decode("utf-8", errors="replace")


def _when(stamp: float | None) -> str:
    return "-" if stamp is None else time.strftime("%Y-%m-%d %H:%M:%S",
                                                   time.localtime(stamp))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


# -- rendering ---------------------------------------------------------------------


@functools.cache
def _templates() -> Any:
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("evolve_ai.dashboard"),
                              autoescape=True, undefined=jinja2.StrictUndefined)


def static_file(name: str) -> tuple[bytes, str] | None:
    """A file the pages load (``plotly.min.js``, ``dashboard.js``, ``style.css``) and
    its content type; None for any other name."""
    types = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
    if name == "plotly.min.js":
        return plotly_js(), types[".js"]
    if name in ("dashboard.js", "style.css"):
        path = Path(__file__).resolve().parent.parent / "dashboard" / "static" / name
        return path.read_bytes(), types[path.suffix]
    return None


@functools.cache
def plotly_js() -> bytes:
    """plotly.js as the ``plotly`` package ships it (found without importing plotly)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise EvolveError("the plotly package is missing: pip install plotly")
    for location in spec.submodule_search_locations:
        path = Path(location) / "package_data" / "plotly.min.js"
        if path.is_file():
            return path.read_bytes()
    raise EvolveError("plotly.min.js is missing from the plotly package: reinstall plotly")


def page(workspace: Workspace, name: str, data: dict[str, Any], live: str | None,
         title: str = "") -> str:
    """A dashboard page: ``overview`` or ``agent``; it polls ``live`` for fresh data."""
    return str(_templates().get_template(f"{name}.html").render(
        data=data, live=live, inline=False, root=str(workspace.root), home="/",
        title=title, agent_url=lambda agent_id: f"/agent/{agent_id}"))


def report(workspace: Workspace) -> str:
    """One self-contained HTML file: the overview and the best agents, charts inline."""
    data: dict[str, Any] = {"overview": overview(workspace)}
    data["agents"] = {row["id"]: agent(workspace, row["id"])
                      for row in data["overview"]["best"][:REPORTED]}
    static = Path(__file__).resolve().parent.parent / "dashboard" / "static"
    assets = {"css": (static / "style.css").read_text(),
              "js": _inline_safe((static / "dashboard.js").read_text()),
              "plotly": _inline_safe(plotly_js().decode("utf-8"))}

    def included(agent_id: str) -> str | None:  # a link within the file, or none
        return f"#agent-{agent_id}" if agent_id in data["agents"] else None

    return str(_templates().get_template("report.html").render(
        data=data, live=None, inline=True, root=str(workspace.root), home="#overview",
        title="", agent_url=included, assets=assets, made=_when(time.time())))


def _inline_safe(script: str) -> str:
    """A script's text made safe inside <script>...</script>: no closing tag in it."""
    return script.replace("</script", "<\\/script")


def routes(workspace: Workspace) -> list[tuple[str, Callable[..., Any]]]:
    """The dashboard's pages, their live data and static files, for ``api.make_server``."""

    def html(text: str) -> Raw:
        return Raw(text.encode(), "text/html; charset=utf-8")

    def home() -> Raw:
        return html(page(workspace, "overview", {"overview": overview(workspace)},
                         "/data/overview"))

    def agent_data(agent_id: str) -> dict[str, Any]:
        shown = agent(workspace, agent_id)
        return {"agents": {shown["id"]: shown}}

    def agent_page(agent_id: str) -> Raw:
        try:
            data = agent_data(agent_id)
        except UnknownAgent as unknown:  # a page, not JSON, with the way back
            return Raw(page(workspace, "missing", {"error": str(unknown)}, None).encode(),
                       "text/html; charset=utf-8", status=404)
        [found] = data["agents"]
        return html(page(workspace, "agent", data, f"/data/agent/{found}", found[:8]))

    def find(id: str = "") -> Raw:
        return agent_page(id.strip())

    def static(name: str) -> Raw:
        found = static_file(name)
        if found is None:
            raise LookupError(f"no such file: {name}")
        return Raw(*found, cacheable=True)

    return [("", home), ("/agent", find), ("/agent/*", agent_page),
            ("/data/overview", lambda: {"overview": overview(workspace)}),
            ("/data/agent/*", agent_data), ("/static/*", static)]
