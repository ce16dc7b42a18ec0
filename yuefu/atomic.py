"""Folders that appear complete or not at all: built in a temporary sibling, then renamed into place."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_folder(target: Path, shared: bool = False) -> Iterator[Path]:
    """Yield a new temporary folder beside ``target``; when the block succeeds it becomes ``target`` (an empty
    ``target`` is replaced); on any error it is removed and ``target`` is left as it was.

    ``shared``: ``target`` is a cache entry that another process may be writing at the same time with the same
    contents; if it got there first, its folder is kept and ours is dropped.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        if target.is_dir() and not any(target.iterdir()):
            target.rmdir()
        try:
            os.replace(tmp, target)
        except OSError:
            if not (shared and target.is_dir() and any(target.iterdir())):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
