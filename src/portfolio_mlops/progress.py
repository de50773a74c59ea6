"""Progress on stderr for long steps: a live line on a terminal, plain lines in logs."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator, TextIO


class Progress:
    """Reports phases and step counts. `null_progress` is silent (library use, tests)."""

    def __init__(self, stream: TextIO | None = None, enabled: bool = True):
        # Resolve stderr now, not at import: callers may have redirected it since.
        stream = stream if stream is not None else sys.stderr
        self.stream = stream
        self.enabled = enabled and stream is not None
        self.live = bool(self.enabled and hasattr(stream, "isatty") and stream.isatty())

    def message(self, text: str) -> None:
        if self.enabled:
            print(text, file=self.stream, flush=True)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        if self.enabled:
            print(f"[{name}] ...", file=self.stream, flush=True)
        yield
        if self.enabled:
            print(f"[{name}] done in {time.perf_counter() - started:.1f}s", file=self.stream, flush=True)

    def step(self, name: str) -> Callable[[int, int, str], None]:
        """A callback(done, total, message) that draws a bar for `name`."""
        started = time.perf_counter()

        def report(done: int, total: int, text: str) -> None:
            if not self.enabled:
                return
            width = 24
            filled = int(width * done / max(total, 1))
            line = f"[{name}] {'#' * filled}{'.' * (width - filled)} {done}/{total} {time.perf_counter() - started:5.1f}s"
            if self.live:
                end = "\n" if done >= total else ""
                print(f"\r{line}", end=end, file=self.stream, flush=True)
            elif done >= total or done == 1 or done % max(1, total // 4) == 0:
                print(line, file=self.stream, flush=True)

        return report


null_progress = Progress(enabled=False)
