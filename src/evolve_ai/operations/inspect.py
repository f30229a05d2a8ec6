"""Read-only views for ``status`` and ``show``: plain dicts, rendered by the CLI."""

from __future__ import annotations

from typing import Any

from evolve_ai.core.records import TemplateVersion
from evolve_ai.errors import EvolveError
from evolve_ai.services.store import Store
from evolve_ai.services.workspace import Workspace

REJECTIONS_SHOWN = 200  # the latest rejected proposals listed by `innovations`


def status(workspace: Workspace, last: int | None = None) -> dict[str, Any]:
    """The population now; ``history`` whole, or its ``last`` generations. Whether a life
    cycle runs is read from the workspace's lock, not from the store: after a kill -9
    the store still says which processes ran, and none of them is counted as running."""
    _clean_if_idle(workspace)
    holder = workspace.life_cycle()
    with Store.open(workspace.db_path) as store:
        history = store.history(last)
        counts = store.counts()
        if holder is None:
            counts["running"] = 0
        return {
            "root": str(workspace.root),
            "life_cycle": {"running": holder is not None,
                           "pid": None if holder is None else holder[0],
                           "since": None if holder is None else holder[1],
                           "last_pass": store.last_pass()},
            "generation": store.generation(),
            "counts": counts,
            "fitness": store.fitness_summary(),
            "history": [row._asdict() for row in history],
            "history_total": store.history_length(),
            "sandbox": store.sandbox(),
            "nodes": None if holder is None else store.nodes(),
            "template": _template_summary(store),
        }


def _template_summary(store: Store) -> dict[str, Any]:
    return {"newest": store.newest_template(), "versions": len(store.templates()),
            "refused": store.template_refused()}


def templates(workspace: Workspace, diff: tuple[str, str] | None = None) -> dict[str, Any]:
    """The template's versions, oldest first, with their living agents; with ``diff``,
    what changed from one version to another (fingerprints or unique prefixes)."""
    _clean_if_idle(workspace)
    with Store.open(workspace.db_path) as store:
        versions = store.templates()
        newest = store.newest_template()
        refused = store.template_refused()
    data: dict[str, Any] = {"refused": refused, "versions": [
        {"fingerprint": v.fingerprint, "created": v.created, "agents": v.agents,
         "files": len(v.files), "genes": sum(len(f) for f in v.genes.values()),
         "newest": v.fingerprint == newest}
        for v in versions]}
    if diff is not None:
        # Here, not at the top: `evolve status` does without dataclasses.
        from evolve_ai.core.catalogue import version_diff

        old, new = (_version(versions, prefix) for prefix in diff)
        data["diff"] = {"from": old.fingerprint, "to": new.fingerprint,
                        **version_diff(old.files, new.files, old.genes, new.genes)}
    return data


def _version(versions: list[TemplateVersion], prefix: str) -> TemplateVersion:
    found = [v for v in versions if v.fingerprint.startswith(prefix)] if prefix else []
    if len(found) != 1:
        raise EvolveError(f"no template version {prefix!r}" if not found else
                          f"{prefix!r} matches more than one template version")
    return found[0]


def show(workspace: Workspace, agent_id: str) -> dict[str, Any]:
    import msgpack  # here, not at the top: `evolve status` does without it (2.5 ms)

    _clean_if_idle(workspace)
    with Store.open(workspace.db_path) as store:
        agent: dict[str, Any] = store.find(agent_id)._asdict()
        data = store.genome_bytes(agent["genome_hash"])
        # Stored genomes were validated on the way in, so plain decoding is safe.
        agent["genome"] = None if data is None else msgpack.unpackb(data, raw=False)
        agent["directory"] = str(workspace.agent_dir(agent["id"]))
        if workspace.life_cycle() is None:  # what the store last recorded ran no longer
            agent["process"], agent["pid"] = "stopped", None
        agent["events"] = store.events_of(agent["id"])
        version = next((v for v in store.templates() if v.fingerprint == agent["template"]),
                       None)
        # What its genome names but its version lacks is never expressed: say which.
        agent["version_genes"] = None if version is None else version.genes
        return agent


def agents(workspace: Workspace, status: str, order: str, limit: int | None
           ) -> list[dict[str, Any]]:
    """Agents of one status (or ``living``, ``all``), ranked, as plain dicts."""
    _clean_if_idle(workspace)
    with Store.open(workspace.db_path) as store:
        rows = store.agents(None if status == "all" else status, order, limit)
    keys = ("id", "status", "generation", "parent", "fitness", "evaluations", "restarts",
            "process", "active_functions", "template", "reason")
    listed = [{key: getattr(row, key) for key in keys} for row in rows]
    if workspace.life_cycle() is None:  # what the store last recorded ran no longer
        for row in listed:
            row["process"] = "stopped"
    return listed


def lineage(workspace: Workspace, agent_id: str) -> dict[str, Any]:
    """The ancestry of an agent, itself first, founders last; and its children."""
    _clean_if_idle(workspace)
    with Store.open(workspace.db_path) as store:
        agent = store.find(agent_id)
        return {"id": agent.id, "ancestry": store.lineage(agent.id),
                "children": store.children(agent.id)}


def _clean_if_idle(workspace: Workspace) -> None:
    """Remove an interrupted command's debris, unless another command holds the lock."""
    if not workspace.is_initialized():
        return
    with workspace.try_lock("status") as held:
        if held:
            with Store.open(workspace.db_path) as store:
                cleanup = workspace.clean_debris(store)
            if cleanup.kept:  # routine deletions are not worth a line here
                from evolve_ai.services import logs

                logs.report_cleanup(cleanup, workspace)


def webhooks(workspace: Workspace) -> list[dict[str, Any]]:
    """Each endpoint of ``[[webhooks]]`` (and any other the outbox still holds
    messages for): its backlog, the oldest waiting, deliveries, drops, last success and
    last error."""
    from evolve_ai.services import config as config_service

    endpoints = config_service.load(workspace.config_path).webhooks
    _clean_if_idle(workspace)
    with Store.open(workspace.db_path) as store:
        report = store.webhook_report()
    blank = {"backlog": 0, "oldest": None, "delivered": 0, "dropped": 0,
             "last_success": None, "last_error": None, "last_error_at": None}
    rows = [{"url": e.url, "events": list(e.events), "configured": True,
             **blank, **report.pop(e.url, {})} for e in endpoints]
    rows += [{"url": url, "events": [], "configured": False, **blank, **seen}
             for url, seen in sorted(report.items())]
    return rows


def innovations(workspace: Workspace) -> dict[str, Any]:
    """Proposals of new genes: the accepted ones with their adoption, how many wait, the
    latest rejections with their reasons."""
    from evolve_ai.operations.innovation import adoption

    _clean_if_idle(workspace)
    with Store.open(workspace.db_path) as store:
        accepted = store.proposals("accepted", oldest_first=True)
        pending = store.proposals_count("pending")
        rejected = store.proposals("rejected", REJECTIONS_SHOWN)
        adopted = adoption(store, [p["module"] for p in accepted if p["module"]])
    for proposal in accepted:
        proposal["adoption"] = adopted.get(proposal["module"])
    for proposal in (*accepted, *rejected):  # the code is in the module, or was refused
        del proposal["source"]
    return {"accepted": accepted, "pending": pending, "rejected": rejected}
