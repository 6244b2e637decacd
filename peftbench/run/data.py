"""Where task data is found: one rule for every task."""

from __future__ import annotations

import os
from pathlib import Path

from .datacache import cache_root
from ..errors import DataError


def locate(corpus: str, data_dir: str | None, source: str) -> Path:
    """``--set data_dir=PATH``, else ``$PEFTBENCH_DATA/<corpus>``, else ``<cache>/data/<corpus>``."""
    if data_dir:
        path = Path(data_dir).expanduser().resolve()
        if not path.exists():
            raise DataError(f"data_dir {path} does not exist", f"point --set data_dir= at your copy of {corpus} ({source})")
        return path
    candidates = []
    env = os.environ.get("PEFTBENCH_DATA")
    if env:
        candidates.append(Path(env).expanduser() / corpus)
    candidates.append(cache_root() / "data" / corpus)
    for candidate in candidates:
        if candidate.exists():
            return candidate.resolve()
    looked = ", ".join(str(c) for c in candidates)
    raise DataError(
        f"no {corpus} data found (looked in --set data_dir=PATH: not given; "
        f"$PEFTBENCH_DATA/{corpus}{'' if env else ': $PEFTBENCH_DATA not set'}; {looked})",
        f"download it from {source} and pass --set data_dir=PATH or put it at one of those places",
    )
