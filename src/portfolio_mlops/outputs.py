"""A run's report folder appears whole or not at all.

Every file is written into a fresh folder beside the destination, `<output>.partial-<run id>`, and
only a complete run swaps it in: the two folders are exchanged in one step (renameat2
RENAME_EXCHANGE; two renames where the filesystem lacks it) and the previous report, now under the
partial name, is removed. So the destination never holds files of two runs (no holdings_hgb.csv of
an earlier run with more algorithms) and a failed or interrupted run leaves the previous complete
report untouched. summary.json names the run id (`run_id`), which is also the suffix of the partial
folder and the `portfolio_mlops.invocation` tag of the MLflow runs it logged.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import uuid
from pathlib import Path

from portfolio_mlops.errors import ConfigError

RUN_ID_ENV = "PORTFOLIO_MLOPS_RUN_ID"  # passed to pipeline steps, which run as child processes
# What marks a folder as an earlier report (a complete one, or one an older version left half-written).
REPORT_MARKERS = ("summary.json", "pipeline.log", "data/manifest.json", "quality.json")
RENAME_EXCHANGE = 2
AT_FDCWD = -100


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def current_run_id() -> str | None:
    return os.environ.get(RUN_ID_ENV) or None


class OutputFolder:
    def __init__(self, output: str | os.PathLike[str], run_id: str):
        self.final = Path(output).absolute()
        self.run_id = run_id
        self.partial = self.final.with_name(f"{self.final.name}.partial-{run_id}")

    def prepare(self) -> Path:
        if self.final.exists() and not self.final.is_dir():
            raise ConfigError(f"--output {self.final}: is a file, not a folder; name a folder for the report")
        # The run replaces the folder as a whole: never one that holds anything but an earlier report.
        here = Path.cwd().resolve()
        if self.final.resolve() == here or self.final.resolve() in here.parents:
            raise ConfigError(f"--output {self.final}: is the working directory or contains it; the run replaces its "
                              "output folder as a whole, so name a folder of its own (e.g. outputs/run)")
        if self.final.is_dir() and any(self.final.iterdir()) and not any(
                (self.final / marker).exists() for marker in REPORT_MARKERS):
            raise ConfigError(f"--output {self.final}: exists and is not a report folder (no summary.json); the run "
                              "replaces its output folder as a whole, so name a new folder or remove this one")
        try:
            self.partial.mkdir(parents=True)
        except OSError as exc:
            raise ConfigError(f"--output {self.final}: cannot create {self.partial.name} beside it: "
                              f"{exc.strerror}; choose a writable folder") from exc
        return self.partial

    def stale_partials(self) -> list[Path]:
        """Partial folders of earlier runs into the same destination (the caller holds its lock)."""
        return sorted(p for p in self.final.parent.glob(f"{self.final.name}.partial-*")
                      if p.is_dir() and p != self.partial)

    def commit(self) -> None:
        """Swap the partial folder in; remove the previous report."""
        if self.final.is_dir():
            if not _exchange(self.partial, self.final):
                old = self.final.with_name(f"{self.final.name}.old-{self.run_id}")
                os.rename(self.final, old)
                os.rename(self.partial, self.final)
                shutil.rmtree(old, ignore_errors=True)
                return
            shutil.rmtree(self.partial, ignore_errors=True)  # now the previous report
        else:
            os.rename(self.partial, self.final)

    def discard(self) -> None:
        shutil.rmtree(self.partial, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    result = renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.ENOTSUP):
        return False  # filesystem or kernel without RENAME_EXCHANGE
    raise OSError(code, os.strerror(code), str(b))


__all__ = ["OutputFolder", "new_run_id", "current_run_id", "RUN_ID_ENV"]
