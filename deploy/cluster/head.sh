#!/bin/sh
# Start the Ray head in the background, then the life cycle in the foreground as the
# container's main process: `docker stop` sends it SIGTERM, it stops every agent and
# saves, and the Ray processes end with the container.
# RAY_HEAD_CPUS: CPUs of this machine the cluster may use for agents (default: all).
set -eu
ray start --head --port=6379 ${RAY_HEAD_CPUS:+--num-cpus="$RAY_HEAD_CPUS"} --disable-usage-stats
exec evolve --log-format json life-cycle "$@"
