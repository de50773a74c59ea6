"""Run the training pipeline on this machine with kfp.local (every step a process, or a container)."""

import builtins
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def local_session(pipeline_root: str | Path, runner: Any = None) -> Iterator[None]:
    """kfp.local.init with a clean exit.

    kfp.local indents print() while a task runs by swapping builtins.print; with two tasks in parallel
    threads the swaps interleave and an indenting print can outlive the run, so it is restored here.
    """
    import kfp.local

    original_print = builtins.print
    kfp.local.init(runner=runner or kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root))
    try:
        yield
    finally:
        builtins.print = original_print


def run_local(params: dict[str, Any], output_dir: str | Path, work_dir: str | Path | None = None,
              keep_work_dir: bool = False, runner: Any = None) -> dict[str, Any]:
    """Run the pipeline; copy the report folder to `output_dir`. Returns {decision, seconds, work_dir}.

    kfp.local leaves per-task scratch files in TMPDIR, so TMPDIR points into the work folder for the
    run and everything is removed afterwards (unless keep_work_dir).
    """
    from pipelines.training import training_pipeline

    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="portfolio-mlops-kfp-"))
    scratch = work / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    previous_tmp = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(scratch)
    tempfile.tempdir = None  # re-read TMPDIR
    started = time.perf_counter()
    try:
        with local_session(work / "pipeline_root", runner):
            outputs = training_pipeline(**params)
        seconds = time.perf_counter() - started
        destination = Path(output_dir)
        if destination.exists():
            shutil.rmtree(destination)
        shutil.copytree(outputs.outputs["report"].path, destination)
        return {"decision": outputs.outputs["decision"], "seconds": seconds, "work_dir": str(work)}
    finally:
        if previous_tmp is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = previous_tmp
        tempfile.tempdir = None
        if not keep_work_dir:
            shutil.rmtree(work, ignore_errors=True)
