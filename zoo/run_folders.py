"""The output folder of a training run, and the previous run a new one would overwrite.

Training writes its checkpoint, metrics and pictures into one folder (runs/NAME by default). Running
the same command again must not silently replace a run someone may still want: a folder that holds
a previous run (its checkpoint or its metrics) is moved aside to a sibling named after that run's
time, runs/NAME.YYYYMMDD-HHMMSS, and the move is logged. A folder that holds no run is written into
as it is, so that `--out` pointing at an unrelated folder never moves it.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)


def set_aside_previous_run(out: Path, run_files: tuple[str, ...]) -> Path | None:
    """Move a previous run out of `out` (one holding any of `run_files`); returns where it went, or None."""
    out = Path(out)
    found = [out / name for name in run_files if (out / name).is_file()]
    if not found:
        return None
    # The previous run's own time (its newest file), so that the sibling says when it was trained.
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(max(path.stat().st_mtime for path in found)))
    kept = out.with_name(f"{out.name}.{stamp}")
    suffix = 1
    while kept.exists():
        suffix += 1
        kept = out.with_name(f"{out.name}.{stamp}-{suffix}")
    out.rename(kept)
    log.info("%s held a previous run: moved it to %s (delete that folder once it is no longer needed)", out, kept)
    return kept
