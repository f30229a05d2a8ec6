"""The ``evolve`` command line: parse, call one operation, render. No business logic here."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click

from evolve_ai import render
from evolve_ai.core.records import STATUSES
from evolve_ai.errors import EvolveError, LockHeld
from evolve_ai.operations import MAX_AGENTS_PER_INIT
from evolve_ai.services import logs
from evolve_ai.services.workspace import Workspace, resolve_root

# Operations are imported inside the commands that use them: `status` must
# answer in tens of milliseconds and not import the life cycle's machinery.


class _State:
    def __init__(self, root: str | None, verbose: bool, quiet: bool) -> None:
        self.root = root
        self.verbose = verbose
        self.quiet = quiet

    def workspace(self) -> Workspace:
        return resolve_root(self.root)

    @property
    def interactive(self) -> bool:
        return not self.quiet and sys.stderr.isatty()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", type=click.Path(file_okay=False), envvar="EVOLVE_ROOT",
              help="Workspace directory (default: $EVOLVE_ROOT or the current directory).")
@click.option("--log-format", type=click.Choice(["console", "json"]), default="console",
              show_default=True, help="Format of the log lines printed on stderr.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging and tracebacks on errors.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr; no progress bar.")
@click.version_option(package_name="evolve-ai", prog_name="evolve")
@click.pass_context
def cli(ctx: click.Context, root: str | None, log_format: str, verbose: bool,
        quiet: bool) -> None:
    """evolve: orchestrator for evolutionary multi-agent AI."""
    if verbose and quiet:
        raise click.UsageError("-v and -q cannot be used together")
    logs.configure(-1 if quiet else (1 if verbose else 0), log_format)
    ctx.obj = _State(root, verbose, quiet)


@cli.command()
@click.argument("count", type=click.IntRange(1, MAX_AGENTS_PER_INIT), metavar="N")
@click.option("--template", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Template directory to clone (default: the workspace's, else the bundled one).")
@click.option("--seed", type=int, help="Seed for ids and genomes: same seed, same population.")
@click.option("--workers", type=click.IntRange(1, 1024),
              help="Worker processes (default: lifecycle.workers).")
@click.option("--from-genome", type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE", help="Founders with this genome (a genome.bin).")
@click.option("--from", "from_agent", metavar="AGENT_ID",
              help="Founders with this agent's genome (the dead's too).")
@click.pass_obj
def init(state: _State, count: int, template: Path | None, seed: int | None,
         workers: int | None, from_genome: Path | None, from_agent: str | None) -> None:
    """Add N agents cloned from the template (creating the workspace if needed), also
    while a life cycle runs: it takes them at its next pass."""
    from evolve_ai.operations.initiate import initiate_project

    if from_genome is not None and from_agent is not None:
        raise click.UsageError("--from-genome and --from cannot be used together")
    with _errors(state), _progress(state, count, "building agents") as advance:
        result = initiate_project(state.workspace(), count, template=template, seed=seed,
                                  workers=workers, progress=advance, from_genome=from_genome,
                                  from_agent=from_agent)
    if not state.quiet:
        size = (f"population.size {result.population_size}" if result.previous_size is None
                else f"population.size {result.previous_size} -> {result.population_size}")
        beside = ("" if result.life_cycle is None
                  else f"; the life cycle (pid {result.life_cycle}) takes them at its next pass")
        click.echo(f"created {len(result.created)} agents in {result.seconds:.2f}s "
                   f"({result.total_living} living, {size}) in {state.workspace().root}"
                   f"{beside}")


@cli.command("life-cycle")
@click.option("--once", is_flag=True, help="Run one pass, then stop every agent and exit.")
@click.option("--generations", type=click.IntRange(1), metavar="N",
              help="Stop after N generations (selections).")
@click.option("--interval", type=click.FloatRange(0), metavar="SECONDS",
              help="Seconds between passes (default: lifecycle.interval).")
@click.option("--workers", type=click.IntRange(1, 1024),
              help="Worker processes (default: lifecycle.workers).")
@click.option("--seed", type=int, help="Seed for the orchestrator's own choices (tasks, ...).")
@click.pass_obj
def life_cycle(state: _State, once: bool, generations: int | None, interval: float | None,
               workers: int | None, seed: int | None) -> None:
    """Supervise, evaluate and select, pass after pass, until SIGINT/SIGTERM."""
    from evolve_ai.operations.lifecycle import RunOptions, run_life_cycle

    if once and generations is not None:
        raise click.UsageError("--once and --generations cannot be used together")
    overrides: dict[str, Any] = {}
    if interval is not None:
        overrides["lifecycle.interval"] = interval
    if workers is not None:
        overrides["lifecycle.workers"] = workers
    with _errors(state):
        summary = run_life_cycle(state.workspace(),
                                 RunOptions(once=once, generations=generations, seed=seed,
                                            panel=state.interactive and not state.verbose),
                                 overrides)
    if not state.quiet and sys.stdout.isatty():
        click.echo(f"stopped ({summary.stopped_by}) after {summary.passes} passes, "
                   f"generation {summary.generations}")
    if summary.stopped_by == "SIGINT":  # agents stopped, all saved: the shell's convention
        sys.exit(130)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--last", type=click.IntRange(0), metavar="N",
              help=f"The last N generations of the history (default: {render.SCREENFUL} on the "
                   "table, all in JSON).")
@click.option("--csv", "as_csv", is_flag=True, help="The whole history, as CSV.")
@click.option("--watch", type=click.FloatRange(0.2), metavar="SECONDS", is_flag=False,
              flag_value=2.0, help="Refresh every SECONDS (2 if not given) until Ctrl-C.")
@click.pass_obj
def status(state: _State, as_json: bool, last: int | None, as_csv: bool,
           watch: float | None) -> None:
    """Whether a life cycle runs; population, statuses, fitness; history by generation."""
    from evolve_ai.operations import inspect

    if sum((as_json, as_csv, watch is not None)) > 1:
        raise click.UsageError("--json, --csv and --watch cannot be used together")
    if as_csv and last is not None:
        raise click.UsageError("--csv exports the whole history: no --last")
    if last is None and watch is not None:  # what fits under the header, not scrolling
        import shutil

        last = max(0, min(render.SCREENFUL, shutil.get_terminal_size().lines - 14))
    elif last is None and not as_json and not as_csv:
        last = render.SCREENFUL
    with _errors(state):
        workspace = state.workspace()
        if watch is not None:
            render.watch(lambda: render.status_text(inspect.status(workspace, last)), watch)
            return
        data = inspect.status(workspace, last)
    if as_csv:
        click.echo(render.history_csv(data["history"]), nl=False)
    else:
        click.echo(render.dumps(data) if as_json else render.status_text(data))


@cli.command()
@click.argument("agent_id", metavar="AGENT_ID")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_obj
def show(state: _State, agent_id: str, as_json: bool) -> None:
    """One agent: status, lineage, genome, hashes, fitness (an id prefix is enough)."""
    from evolve_ai.operations import inspect

    with _errors(state):
        data = inspect.show(state.workspace(), agent_id)
    click.echo(render.dumps(data) if as_json else render.agent_text(data))


@cli.command()
@click.option("--diff", nargs=2, metavar="FROM TO",
              help="What changed between two versions (fingerprints or prefixes).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_obj
def template(state: _State, diff: tuple[str, str] | None, as_json: bool) -> None:
    """The template's versions, how many living agents run each, what changed."""
    from evolve_ai.operations import inspect

    with _errors(state):
        data = inspect.templates(state.workspace(), diff or None)
    click.echo(render.dumps(data) if as_json else render.templates_text(data))


@cli.command()
@click.argument("agent_id", metavar="AGENT_ID")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_obj
def lineage(state: _State, agent_id: str, as_json: bool) -> None:
    """An agent's ancestry back to its founder, and its children (dead agents too)."""
    from evolve_ai.operations import inspect

    with _errors(state):
        data = inspect.lineage(state.workspace(), agent_id)
    if as_json:
        click.echo(render.dumps(data))
        return
    for depth, row in enumerate(data["ancestry"]):
        click.echo(f"{'  ' * depth}{row['id']}  gen {row['generation']}  {row['status']:<11} "
                   f"fitness {render.fmt(row['fitness'])}")
    click.echo(f"children: {len(data['children'])}")


@cli.command()
@click.option("--status", type=click.Choice(["living", "all", *STATUSES]), default="living",
              show_default=True, help="Which agents.")
@click.option("--sort", "order", type=click.Choice(
    ["fitness", "generation", "evaluations", "restarts", "created"]), default="created",
              show_default=True, help="Best fitness first, newest generation first, ...")
@click.option("--limit", type=click.IntRange(1), metavar="N", help="At most N agents.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list.")
@click.pass_obj
def agents(state: _State, status: str, order: str, limit: int | None, as_json: bool) -> None:
    """List and rank agents."""
    from evolve_ai.operations import inspect

    with _errors(state):
        rows = inspect.agents(state.workspace(), status, order, limit)
    click.echo(render.dumps(rows) if as_json else render.agents_text(rows))


@cli.command("serve-api")
@click.option("--listen", metavar="HOST:PORT", help="Address (default: api.listen).")
@click.pass_obj
def serve_api(state: _State, listen: str | None) -> None:
    """Serve the store as read-only JSON over HTTP until stopped (SIGTERM, Ctrl-C)."""
    _serve(state, listen, dashboard=False)


@cli.command()
@click.option("--listen", metavar="HOST:PORT", help="Address (default: api.listen).")
@click.pass_obj
def dashboard(state: _State, listen: str | None) -> None:
    """Serve a live web dashboard of the store (and the JSON API) until stopped."""
    _serve(state, listen, dashboard=True)


@cli.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Where to write it (default: report.html in the workspace).")
@click.pass_obj
def report(state: _State, out: Path | None) -> None:
    """Write one self-contained HTML file: the dashboard's views as a snapshot."""
    from evolve_ai.operations import dashboard as pages
    from evolve_ai.services.files import atomic_write

    with _errors(state):
        workspace = _initialized(state)
        target = (out or workspace.root / "report.html").absolute()
        if not target.parent.is_dir():
            raise EvolveError(f"cannot write {target}: {target.parent} is not a directory")
        text = pages.report(workspace)
        atomic_write(target, text.encode("utf-8"))
    if not state.quiet:
        click.echo(f"wrote {target} ({len(text) / 1e6:.1f} MB, no network needed to open it)")


def _initialized(state: _State) -> Workspace:
    workspace = state.workspace()
    if not workspace.is_initialized():
        raise EvolveError(f"no evolve workspace in {workspace.root}: run 'evolve init N' first")
    return workspace


def _serve(state: _State, listen: str | None, dashboard: bool) -> None:
    """The read API (and the dashboard's pages) until SIGTERM (0) or Ctrl-C (130)."""
    import signal
    import threading

    from evolve_ai.operations import api
    from evolve_ai.services import config as config_service
    from evolve_ai.services.config import parse_listen

    with _errors(state):
        workspace = _initialized(state)
        config = config_service.load(workspace.config_path)
        host, port = parse_listen(listen or config.api.listen,
                                  "--listen" if listen else "api.listen")
        more: api.Routes = ()
        if dashboard:
            from evolve_ai.operations import dashboard as pages

            pages.plotly_js()  # a missing plotly is said now, not at the first page
            more = pages.routes(workspace)
        server = api.make_server(workspace, host, port, config.api.token, more)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    if not state.quiet:
        where = f"http://{host}:{server.server_port}/"
        click.echo(f"serving {workspace.root} on {where}" if dashboard
                   else f"serving {workspace.root} on {where}api/status")
    try:
        stop.wait()
    except KeyboardInterrupt:
        server.shutdown()
        sys.exit(130)
    server.shutdown()


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list.")
@click.pass_obj
def webhooks(state: _State, as_json: bool) -> None:
    """Each webhook endpoint: backlog, deliveries, drops, last success and error."""
    from evolve_ai.operations import inspect

    with _errors(state):
        rows = inspect.webhooks(state.workspace())
    click.echo(render.dumps(rows) if as_json else render.webhooks_text(rows))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_obj
def innovations(state: _State, as_json: bool) -> None:
    """Genes the agents invented: accepted (with their adoption), waiting, rejected."""
    from evolve_ai.operations import inspect

    with _errors(state):
        data = inspect.innovations(_initialized(state))
    click.echo(render.dumps(data) if as_json else render.innovations_text(data))


@cli.command()
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.pass_obj
def backup(state: _State, path: Path | None) -> None:
    """A consistent, checksummed archive of the population (also while a life cycle
    runs); default: backups/evolve-g<generation>-<UTC time>.tar.gz."""
    from evolve_ai.operations import backup as backups

    with _errors(state):
        made = backups.backup(state.workspace(), path)
    if not state.quiet:
        click.echo(f"backed up generation {made.generation}, {made.agents} living agents, "
                   f"to {made.path} ({made.size / 1e6:.1f} MB)")


@cli.command()
@click.argument("archive", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--workers", type=click.IntRange(1, 1024), default=1, show_default=True,
              help="Worker processes to build the agents.")
@click.pass_obj
def restore(state: _State, archive: Path, workers: int) -> None:
    """Make the workspace (--root, an empty directory) from a backup: a life cycle
    there resumes the population."""
    from evolve_ai.operations import backup as backups

    with _errors(state):
        made = backups.restore(archive, state.workspace(), workers)
    if not state.quiet:
        click.echo(f"restored generation {made.generation}, {made.agents} living agents, "
                   f"in {state.workspace().root}")


@cli.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("targets", nargs=-1, metavar="ID|--best [DIR]")
@click.option("--best", is_flag=True, help="The active agent with the best fitness.")
@click.pass_obj
def export(state: _State, targets: tuple[str, ...], best: bool) -> None:
    """One agent as a directory that runs on its own (DIR: new or empty, default
    ./agent-<id prefix>): cd DIR && PYTHONPATH=src python -m agent.main"""
    from evolve_ai.operations import backup as backups

    wanted = 1 if best else 2
    if len(targets) > wanted or (not best and not targets):
        raise click.UsageError("give ID [DIR] or --best [DIR]")
    agent_id = None if best else targets[0]
    rest = targets[0 if best else 1:]
    destination = Path(rest[0]).absolute() if rest else None
    with _errors(state):
        exported, made = backups.export(state.workspace(), agent_id, destination)
    if not state.quiet:
        click.echo(f"exported agent {exported} to {made}; run it: cd {made} && "
                   "PYTHONPATH=src python -m agent.main")


@contextmanager
def _errors(state: _State) -> Iterator[None]:
    """Turn failures into one line and an exit code; tracebacks only with -v."""
    try:
        yield
    except Exception as exc:
        _fail(state, exc)
    except KeyboardInterrupt as exc:
        _fail(state, exc)


def _fail(state: _State, exc: BaseException) -> NoReturn:
    if state.verbose and not isinstance(exc, KeyboardInterrupt):
        traceback.print_exc()
    line, code = render.failure(exc)
    if not (state.quiet and isinstance(exc, LockHeld)):  # under cron: the normal case
        click.echo(line, err=True)
    sys.exit(code)


@contextmanager
def _progress(state: _State, total: int, label: str) -> Iterator[Callable[[int], None] | None]:
    if not state.interactive:
        yield None
        return
    with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
        yield bar.update


def main() -> None:
    cli(prog_name="evolve")
