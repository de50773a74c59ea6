"""`portfolio-mlops stack up|down|status`: the subcommand registers its own parser and handler.

Imports of the stack itself wait until the command runs, so building the CLI's parser stays cheap.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any


def add_parser(subcommands: Any) -> argparse.ArgumentParser:
    """Add `stack` and its actions to the CLI's subparsers; the handler is `run_command`."""
    stack = subcommands.add_parser(
        "stack", help="run PostgreSQL, an S3 server and the MLflow tracking server locally (127.0.0.1)",
        description="The local MLflow stack: the three services the Kubernetes deployment runs - PostgreSQL (backend\n"
                    "store), an S3 server (SeaweedFS; artifact store) and the MLflow tracking server (proxied artifacts,\n"
                    "so clients need only MLFLOW_TRACKING_URI) - as processes on 127.0.0.1 under one folder (data, logs,\n"
                    "state.json). They keep running after the command returns; `stack down` stops them.",
        epilog="examples:\n"
               "  portfolio-mlops stack up                       # standard ports 15432, 18333, 15000\n"
               "  export MLFLOW_TRACKING_URI=http://127.0.0.1:15000\n"
               "  portfolio-mlops run                            # tracked on the local server\n"
               "  portfolio-mlops stack status                   # exit status 0 only if all are healthy\n"
               "  portfolio-mlops stack down --purge             # stop and delete the data",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    stack.set_defaults(func=run_command)
    actions = stack.add_subparsers(dest="stack_command", required=True, metavar="ACTION")
    dir_help = "folder for data, logs and state.json (default: ./.stack)"
    up = actions.add_parser(
        "up", help="start whatever is not running (idempotent)",
        description="Start PostgreSQL, the S3 server and the MLflow server, each waiting until it answers; "
                    "services already running and healthy are left alone. Prints each service's URL and the "
                    "MLFLOW_TRACKING_URI to export. A port left out keeps the one this folder used before "
                    "(else the standard one); 0 picks a free one. The S3 port P also uses P+1..P+4 and "
                    "P+10000..P+10004 (SeaweedFS's internal servers).")
    up.add_argument("--dir", metavar="DIR", help=dir_help)
    up.add_argument("--postgres-port", type=int, metavar="P", help="PostgreSQL port (standard 15432)")
    up.add_argument("--s3-port", type=int, metavar="P", help="S3 endpoint port (standard 18333)")
    up.add_argument("--mlflow-port", type=int, metavar="P", help="MLflow tracking server port (standard 15000)")
    down = actions.add_parser(
        "down", help="stop every service (data is kept unless --purge)",
        description="Stop the MLflow server, the S3 server and PostgreSQL, in that order (SIGTERM - for "
                    "PostgreSQL its fast shutdown - then SIGKILL after 20 s). Safe to repeat. Data stays for the next `stack up` unless --purge.")
    down.add_argument("--dir", metavar="DIR", help=dir_help)
    down.add_argument("--purge", action="store_true", help="also delete the data, logs and state")
    status = actions.add_parser(
        "status", help="table of pid, port and health per service; exit status 0 only if all are healthy",
        description="For each service: whether its process is alive, whether its port answers, and whether it "
                    "is healthy (PostgreSQL runs a query, S3 answers for the bucket, MLflow answers /health), "
                    "with memory use and URL. Exit status 0 if all are healthy, else 1.")
    status.add_argument("--dir", metavar="DIR", help=dir_help)
    return stack


def run_command(args: argparse.Namespace) -> int:
    """Run `stack up|down|status` from parsed arguments; returns the exit status."""
    from portfolio_mlops.devstack.processes import tree_rss_kb
    from portfolio_mlops.devstack.services import down, status, up
    from portfolio_mlops.devstack.state import StackConfig
    from portfolio_mlops.progress import Progress

    base_dir = Path(args.dir) if args.dir else Path.cwd() / ".stack"
    if args.stack_command == "up":
        cfg = StackConfig(base_dir=base_dir, postgres_port=args.postgres_port, s3_port=args.s3_port,
                          mlflow_port=args.mlflow_port)
        started = time.perf_counter()
        state = up(cfg, Progress())
        rss = {name: tree_rss_kb(pid) / 1024 for name, pid in state.pids.items()}
        print(f"postgres  {state.postgres_uri:<48} pid {state.pids['postgres']:<8} {rss['postgres']:6.0f} MB")
        print(f"s3        {state.s3_endpoint:<48} pid {state.pids['s3']:<8} {rss['s3']:6.0f} MB"
              f"  (bucket {state.bucket}, access key {state.access_key}; secret in state.json)")
        print(f"mlflow    {state.tracking_uri:<48} pid {state.pids['mlflow']:<8} {rss['mlflow']:6.0f} MB")
        print(f"data, logs and state: {state.base_dir}  [{time.perf_counter() - started:.1f}s]")
        print(f"export MLFLOW_TRACKING_URI={state.tracking_uri}")
        return 0
    cfg = StackConfig(base_dir=base_dir)
    if args.stack_command == "status":
        report = status(cfg)
        print(format_status(report))
        return 0 if all(service["healthy"] for service in report.values()) else 1
    if args.stack_command == "down":
        stopped = down(cfg, purge=args.purge, progress=Progress())
        for name, pid in stopped:
            print(f"stopped {name} (pid {pid})")
        if not stopped:
            print(f"nothing was running in {cfg.base_dir}")
        print(f"removed {cfg.base_dir}" if args.purge else f"data kept in {cfg.base_dir} (--purge removes it)")
        return 0
    raise AssertionError(args.stack_command)


def format_status(report: dict[str, dict[str, Any]]) -> str:
    """The `stack status` table: one row per service."""
    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    rows = [("service", "pid", "port", "alive", "answering", "healthy", "rss MB", "url")]
    for name, service in report.items():
        rows.append((name, str(service["pid"] or "-"), str(service["port"] or "-"), yes(service["alive"]),
                     yes(service["answering"]), yes(service["healthy"]),
                     f"{service['rss_mb']:.0f}" if service["rss_mb"] is not None else "-", service["url"] or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1]
                     for row in rows)
