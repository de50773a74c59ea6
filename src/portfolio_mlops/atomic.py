"""Atomic file outputs: a reader sees the old file or the complete new one, never half of it."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd


@contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it over `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; outputs should be as readable as any file
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_text(target: str | os.PathLike[str], text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(target: str | os.PathLike[str], payload: Any) -> None:
    write_text(target, json_text(payload))


def json_text(payload: Any) -> str:
    """The JSON text write_json writes (indented, keys in their order, a final newline)."""
    return json.dumps(payload, indent=2, sort_keys=False, default=_json_default) + "\n"


def write_parquet(target: str | os.PathLike[str], frame: pd.DataFrame, split_floats: bool = False) -> None:
    """`frame` without its index, snappy-compressed. `split_floats`: float columns byte-stream-split
    instead of dictionary-encoded (Parquet's BYTE_STREAM_SPLIT): for prices, whose values rarely repeat,
    about half the write and read time and 2/3 of the size; the values read back are the same. Not for
    frames of many repeated floats (ranked features), which dictionary encoding packs far smaller."""
    with atomic_path(target) as tmp:
        if not split_floats:
            frame.to_parquet(tmp, index=False)
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)  # what to_parquet(index=False) writes
        floats = [f.name for f in table.schema if pa.types.is_floating(f.type)]
        pq.write_table(table, tmp, use_dictionary=[c for c in table.column_names if c not in floats],
                       column_encoding={c: "BYTE_STREAM_SPLIT" for c in floats})


def read_marker(path: str | os.PathLike[str], missing_hint: str) -> Any:
    """Read the JSON file whose presence marks a completed step; a clear error says how to make it."""
    from portfolio_mlops.errors import DataLayoutError

    path = Path(path)
    if not path.is_file():
        raise DataLayoutError(f"{path.parent}: no {path.name}; {missing_hint}")
    return json.loads(path.read_text(encoding="utf-8"))


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
