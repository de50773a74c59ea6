"""What wraps every `run`, whatever the engine: locks, the janitor, the partial output folder, signals.

    with run_session(args) as session:      # args.output is the destination the user named
        ... write into session.partial ...  # (the CLI points args.output there for the engine)

On entry: SIGINT/SIGTERM handlers (interrupts.py); a run id (summary.json's `run_id`, the MLflow runs'
`portfolio_mlops.invocation` tag, passed to pipeline steps in PORTFOLIO_MLOPS_RUN_ID); the lock of
the embedded tracking store and of the output folder (locks.py; --wait-lock SECONDS, default 0); the
embedded store created under its lock; what earlier runs left behind is cleaned (RUNNING MLflow runs
of dead processes closed FAILED with their half registrations deleted, partial output folders).
On success the partial folder is swapped in (outputs.py). On an interrupt: every MLflow run of this
run id ends FAILED with the reason, versions without the completion mark are deleted, the partial
folder is removed, and `Interrupted` carries what was done to the CLI's one line. On an error: the
previous report stays; partial files, if any, are kept without summary.json and their place is said.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from portfolio_mlops import interrupts, locks
from portfolio_mlops.outputs import RUN_ID_ENV, OutputFolder, new_run_id


# The kfp engine's work folder in TMPDIR (pipelines/local.py) and the marker naming its owner.
KFP_WORK_PREFIX = "portfolio-mlops-kfp-"
OWNER_MARKER = "owner.json"


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Session:
    def __init__(self, folder: OutputFolder, tracking: bool, registered_model: str | None):
        self.folder = folder
        self.run_id = folder.run_id
        self.tracking = tracking
        self.registered_model = registered_model
        self.failed = False  # set when the engine returns a non-zero status without raising

    @property
    def partial(self) -> Path:
        return self.folder.partial

    @property
    def final(self) -> Path:
        return self.folder.final


@contextmanager
def run_session(output: str | os.PathLike[str], tracking: bool = True, registered_model: str | None = None,
                experiment: str | None = None, wait_lock: float = 0.0, command: str = "portfolio-mlops run",
                say: Callable[[str], None] = _say) -> Iterator[Session]:
    from portfolio_mlops.tracking import default_tracking_uri

    previous_run_id = os.environ.get(RUN_ID_ENV)
    session = Session(OutputFolder(output, new_run_id()), tracking, registered_model)
    os.environ[RUN_ID_ENV] = session.run_id
    try:
        with interrupts.handle_signals(), ExitStack() as held:
            uri = default_tracking_uri()
            store_lock = locks.store_lock_path(uri) if tracking else None
            if store_lock is not None:
                held.enter_context(locks.hold(store_lock, f"the MLflow store {locks.sqlite_path(uri)}", wait_lock,
                                              command, say))
            held.enter_context(locks.hold(locks.output_lock_path(output), f"the output folder {session.final}",
                                          wait_lock, command, say))
            clean_stale_folders(tempfile.gettempdir(), KFP_WORK_PREFIX, OWNER_MARKER, say)  # a killed run's
            for stale in session.folder.stale_partials():
                shutil.rmtree(stale, ignore_errors=True)
                say(f"removed {stale}, the partial output of an earlier run that did not finish")
            if tracking:
                _tidy_store(store_lock is not None, registered_model, experiment, say)
            session.folder.prepare()
            try:
                yield session
            except interrupts.Interrupted as exc:
                _after_interrupt(session, exc)
                raise
            except BaseException:
                _after_failure(session, say)
                raise
            if session.failed:
                _after_failure(session, say)
            else:
                session.folder.commit()
    finally:
        if previous_run_id is None:
            os.environ.pop(RUN_ID_ENV, None)
        else:
            os.environ[RUN_ID_ENV] = previous_run_id


def _tidy_store(embedded: bool, registered_model: str | None, experiment: str | None,
                say: Callable[[str], None]) -> None:
    """Create the embedded store (under its lock) and close what killed runs left RUNNING."""
    from portfolio_mlops.tracking import default_tracking_uri, ensure_store, fail_abandoned_runs

    db = locks.sqlite_path(default_tracking_uri())
    if embedded and db is not None and not db.exists():
        ensure_store()  # first use: MLflow migrates the new database; nobody else can while we hold the lock
        return
    if not (embedded and experiment):
        return  # a tracking server's runs are closed by the promote step's own janitor (tracking._log_chain)
    from mlflow import MlflowClient

    client = MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return
    closed = fail_abandoned_runs(client, found.experiment_id, registered_model)
    if closed:
        say(f"closed {len(closed)} MLflow run(s) FAILED that a killed earlier run left RUNNING "
            f"({', '.join(r[:8] for r in closed)}); versions they registered without the completion mark were deleted")


def _after_interrupt(session: Session, exc: interrupts.Interrupted) -> None:
    deadline = time.monotonic() + 2.0
    while interrupts.running_steps() and time.monotonic() < deadline:
        time.sleep(0.05)
    if interrupts.running_steps():
        interrupts.stop_steps(signal.SIGKILL)
    name = interrupts.NAMES.get(exc.signum, str(exc.signum))
    if session.tracking:
        try:
            from portfolio_mlops.tracking import close_invocation

            closed, deleted, kept = close_invocation(session.run_id, f"interrupted by {name}",
                                                     session.registered_model)
            if closed:
                exc.details.append(f"{len(closed)} MLflow run(s) ended FAILED (interrupted)")
            if deleted:
                exc.details.append(f"deleted {len(deleted)} unfinished model version(s)")
            if kept:  # the signal came after the registration's completion mark
                exc.details.append(f"registration had completed before the signal: kept v{', v'.join(kept)}")
            elif not deleted:
                exc.details.append("nothing registered")
        except Exception as error:  # noqa: BLE001 - the store may be what failed; the next run's janitor retries
            exc.details.append(f"MLflow runs left for the next run to close ({type(error).__name__})")
    session.folder.discard()
    previous = "the previous report is untouched" if session.final.is_dir() else "no report written"
    exc.details.append(f"{previous} ({session.final})")


def _after_failure(session: Session, say: Callable[[str], None]) -> None:
    partial = session.partial
    if not partial.is_dir() or not any(partial.iterdir()):
        session.folder.discard()
        return
    (partial / "summary.json").unlink(missing_ok=True)  # a run that failed has no summary
    kept = "the previous report in it is untouched" if session.final.is_dir() else "nothing was written there"
    say(f"run failed: {session.final} not updated ({kept}); this run's partial files: {partial}")


def owner_marker() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}


def clean_stale_folders(parent: str | os.PathLike[str], prefix: str, marker: str = "owner.json",
                        say: Callable[[str], None] = _say) -> list[Path]:
    """Remove `parent/<prefix>*` folders whose marker names a process of this host that is gone (a
    killed run's scratch space: kfp.local's work folder with its per-task temp files)."""
    import json

    removed = []
    host = socket.gethostname()
    for folder in sorted(Path(parent).glob(f"{prefix}*")):
        try:
            owner = json.loads((folder / marker).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # not ours, or still being created
        if owner.get("host") != host or locks.pid_alive(int(owner.get("pid", 0))):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
        say(f"removed {folder}, left by an earlier run (pid {owner.get('pid')}) that was killed")
    return removed


__all__ = ["run_session", "Session", "clean_stale_folders", "owner_marker"]
