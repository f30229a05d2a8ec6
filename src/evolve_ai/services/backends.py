"""Which launcher runs the agents: ``cluster.backend`` read once, at the start."""

from __future__ import annotations

from collections.abc import Callable

from evolve_ai.errors import ConfigError
from evolve_ai.services.config import ClusterSection
from evolve_ai.services.forkserver_launcher import ForkServerLauncher
from evolve_ai.services.launcher import Launcher
from evolve_ai.services.workspace import Workspace


def launcher_for(cluster: ClusterSection, workspace: Workspace) -> Callable[[], Launcher]:
    """A factory of the backend's launcher; Ray is imported only when it is chosen."""
    if cluster.backend == "local":
        return ForkServerLauncher
    try:
        from evolve_ai.services.ray_launcher import RayLauncher
    except ImportError as error:
        raise ConfigError("cluster.backend = \"ray\" needs Ray: pip install "
                          f"'evolve-ai[ray]' ({error})") from None
    return lambda: RayLauncher(cluster, workspace.commons_dir, workspace.agents_dir)
