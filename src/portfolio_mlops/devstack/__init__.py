"""The local MLflow stack (`portfolio-mlops stack`): PostgreSQL, an S3 server and the MLflow tracking server on 127.0.0.1.

The same three services the Kubernetes deployment runs, as plain processes under one folder (default
`./.stack`), so tracking, the model registry and artifact storage work on one machine with no cluster:

    <dir>/postgres      PostgreSQL cluster: MLflow's backend store (database `mlflow`)
    <dir>/s3            SeaweedFS data and its S3 identity file: the artifact store (bucket `mlflow`)
    <dir>/mlflow        the tracking server's working directory
    <dir>/logs          one log per service (<name>.log); SeaweedFS's own glog files in logs/seaweedfs
    <dir>/run           Unix sockets
    <dir>/state.json    pids, ports, URLs and credentials of what runs (written atomically)

Everything binds to and is reached on 127.0.0.1 only. Each service runs in its own session, so it
outlives the command that started it; `down` stops them. Data survives `down` unless `purge=True`.

Clients need only the tracking URI: the server proxies artifacts (`--artifacts-destination`), so the
S3 credentials live in the server's environment, never in the client's.

Linux (Debian's PostgreSQL layout, /proc); as root, PostgreSQL runs as the `postgres` user.

A process supervisor, not domain code, hence its own package:

    state.py       StackConfig, StackState (state.json), the folder layout, its lock, service logs
    processes.py   process groups from /proc, the children we spawned, ports, SeaweedFS sockets
    services.py    up / down / status / start_service / stop_service: starting and stopping each service
    cli.py         the `stack` subcommand (parser and handler)

The public names below load their module on first use, so the CLI's parser does not pay for them.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "state": ("HOST", "SERVICES", "DEFAULT_PORTS", "STOP_TIMEOUT_SECONDS", "StackConfig", "StackError", "StackState",
              "load_state"),
    "services": ("up", "down", "status", "start_service", "stop_service", "find_postgres_bin_dir", "find_weed_binary",
                 "s3_client"),
}
_HOME = {name: module for module, names in _PUBLIC.items() for name in names}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
