"""What commands print: JSON, text tables, and the one line for a failure.

Shared by the full command line (``cli``) and the quick path of ``evolve status``
(``entry``), which must not import click.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from evolve_ai.errors import EvolveError

SCREENFUL = 20  # generations of history in the status table unless --last says


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=_json_default)


def _json_default(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"cannot serialize {type(value).__name__}")


def failure(exc: BaseException) -> tuple[str, int]:
    """The one line (no traceback) and the exit status for a command that failed."""
    if isinstance(exc, EvolveError):
        return f"evolve: error: {exc}", exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return "evolve: interrupted", 130
    if isinstance(exc, OSError):
        return f"evolve: error: {exc}", 1
    if type(exc).__module__ == "sqlite3":  # a store damaged after it was opened
        return (f"evolve: error: the store cannot be read ({exc}); restore "
                "workspace/evolve.db from a backup", 1)
    return (f"evolve: internal error: {type(exc).__name__}: {exc} "
            "(run with -v for the traceback)", 1)


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def when(stamp: float | None) -> str:
    import time

    return "-" if stamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def ago(stamp: float | None) -> str:
    import time

    if stamp is None:
        return "never"
    seconds = max(0.0, time.time() - stamp)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def status_text(data: dict[str, Any]) -> str:
    counts = data["counts"]
    cycle = data["life_cycle"]
    running = (f"running (pid {cycle['pid']}, since {when(cycle['since'])}); "
               if cycle["running"] else "not running; ")
    lines = [
        f"workspace   {data['root']}",
        f"life cycle  {running}last pass {ago(cycle['last_pass'])}",
        f"generation  {data['generation']}",
        "agents      " + "  ".join(f"{k} {counts[k]}" for k in
                                   ("active", "disabled", "quarantined", "dead", "running")),
        f"fitness     mean {fmt(data['fitness']['mean'])}  max {fmt(data['fitness']['max'])}",
    ]
    sandbox = data.get("sandbox")
    if sandbox:  # as the last life cycle said when it started
        lines.append(f"sandbox     {sandbox['sandbox']}; processes: {sandbox['processes']}; "
                     f"memory: {sandbox.get('memory', '-')}; uids: {sandbox['uids']}")
    nodes = data.get("nodes")
    if nodes:  # a life cycle on a cluster: its agents with a process, per node
        lines.append("nodes       " + "  ".join(f"{name} {count}"
                                                for name, count in sorted(nodes.items())))
    template = data.get("template") or {}
    if template.get("newest"):
        lines.append(f"template    {template['newest'][:12]} "
                     f"({template['versions']} version{'s' * (template['versions'] != 1)})"
                     + (f"; agent_template/ refused: {template['refused']}"
                        if template.get("refused") else ""))
    if data["history"]:
        lines += ["", f"{'gen':>5} {'mean':>8} {'max':>8} {'pop':>7} {'births':>7} {'deaths':>7}"]
        lines += [
            f"{h['generation']:>5} {fmt(h['mean']):>8} {fmt(h['max']):>8} "
            f"{h['population']:>7} {h['births']:>7} {h['deaths']:>7}"
            for h in data["history"]
        ]
        hidden = data["history_total"] - len(data["history"])
        if hidden > 0:
            lines.append(f"({hidden} earlier generations: --last N shows more, "
                         "--csv exports them all)")
    return "\n".join(lines)


HISTORY_FIELDS = ("generation", "mean", "max", "min", "sd", "population", "births", "deaths",
                  "tasks")


def history_csv(history: list[dict[str, Any]]) -> str:
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HISTORY_FIELDS)
    writer.writerows([row[key] for key in HISTORY_FIELDS] for row in history)
    return out.getvalue()


def watch(text: Callable[[], str], seconds: float) -> None:
    """Print ``text()`` every ``seconds`` until Ctrl-C: in place on a terminal, one
    snapshot after another elsewhere. Ctrl-C is how it ends: no error."""
    import sys
    import time

    on_terminal = sys.stdout.isatty()
    try:
        while True:
            frame = text()
            if on_terminal:  # home, then clear to the end: no flicker of a blank screen
                sys.stdout.write("\x1b[H" + frame.replace("\n", "\x1b[K\n") + "\x1b[K\x1b[J\n")
            else:
                sys.stdout.write(frame + "\n\n")
            sys.stdout.flush()
            time.sleep(seconds)
    except KeyboardInterrupt:
        return


def agent_text(data: dict[str, Any]) -> str:
    keys = ("id", "status", "reason", "generation", "parent", "process", "pid", "restarts",
            "fitness", "evaluations", "active_files", "active_functions", "genome_hash",
            "code_hash", "template", "directory")
    lines = [f"{key:<17} {'-' if data.get(key) is None else data[key]}" for key in keys]
    genome = data.get("genome") or {}
    genes = data.get("version_genes")  # its template version's, if known
    lines.append("genome (+ on, - off; genes its template version lacks in brackets)")
    for gene in genome.get("files", []):
        mine = None if genes is None else set(genes.get(gene["path"], ()))
        on = [name if mine is None or name in mine else f"[{name}]"
              for name, flag in gene["functions"].items() if flag]
        mark = "+" if gene["active"] else "-"
        path = gene["path"] if mine is None or mine else f"[{gene['path']}]"
        lines.append(f"  {mark} {path}: {', '.join(on) or '(no function on)'}")
    lines.append(f"  mutations {genome.get('mutations', 0)}")
    return "\n".join(lines)


def templates_text(data: dict[str, Any]) -> str:
    """The versions table; with a diff, the diff alone."""
    diff = data.get("diff")
    if diff:
        lines = [f"from {diff['from'][:12]} to {diff['to'][:12]}"]
        for key, mark in (("files_added", "+ file"), ("files_removed", "- file"),
                          ("files_changed", "~ file"), ("genes_added", "+ gene"),
                          ("genes_removed", "- gene")):
            lines += [f"  {mark} {item}" for item in diff[key]]
        return "\n".join(lines if len(lines) > 1 else [*lines, "  no difference"])
    lines = [f"{'version':<14} {'created':<20} {'agents':>7} {'files':>6} {'genes':>6}"]
    for v in data["versions"]:
        lines.append(f"{v['fingerprint'][:12]:<14} {when(v['created']):<20} {v['agents']:>7} "
                     f"{v['files']:>6} {v['genes']:>6}{'  newest' if v['newest'] else ''}")
    refused = data.get("refused")
    if refused:
        lines += ["", f"agent_template/ is refused: {refused}"]
    return "\n".join(lines)


def agents_text(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'id':<36} {'status':<11} {'gen':>4} {'fitness':>8} {'evals':>6} "
             f"{'restarts':>8} {'genes':>5} {'process':<8} template"]
    lines += [f"{r['id']:<36} {r['status']:<11} {r['generation']:>4} {fmt(r['fitness']):>8} "
              f"{r['evaluations']:>6} {r['restarts']:>8} {r['active_functions']:>5} "
              f"{r['process']:<8} {(r['template'] or '-')[:12]}" for r in rows]
    return "\n".join(lines)


def webhooks_text(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no webhook endpoint ([[webhooks]] in evolve.toml)"
    lines = []
    for row in rows:
        gone = "" if row["configured"] else " (no longer in evolve.toml)"
        lines += [f"{row['url']}{gone}",
                  f"  backlog {row['backlog']} (oldest {when(row['oldest'])}), delivered "
                  f"{row['delivered']}, dropped {row['dropped']}",
                  f"  last success {when(row['last_success'])}; last error "
                  f"{row['last_error'] or '-'} ({when(row['last_error_at'])})"]
    return "\n".join(lines)


def innovations_text(data: dict[str, Any]) -> str:
    lines = []
    for p in data["accepted"]:
        figures = p["figures"]
        share = "-" if p["adoption"] is None else f"{p['adoption']:.0%}"
        lines += [f"{p['module']}  (proposal {p['id']}, {p['name']})",
                  f"  by {p['agent']} in generation {p['generation']}, accepted "
                  f"{when(p['decided'])}; adopted by {share} of the active agents",
                  f"  trial: {figures.get('function')} solved {figures.get('solved')} of "
                  f"{figures.get('tasks')} held-out tasks, {figures.get('solved_alone')} alone, "
                  f"{figures.get('precision', 0):.0%} of its answers right"]
    if not lines:
        lines.append("no accepted innovation")
    lines.append(f"{data['pending']} waiting; latest rejections:")
    lines += [f"  {p['id']:>6} {p['name'] or '-':<20} {p['agent'][:8]} {p['reason']}"
              for p in data["rejected"][:10]]
    return "\n".join(lines)
