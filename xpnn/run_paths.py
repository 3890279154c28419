"""Run folders named on the command line: a path, or a bare run id as `xpnn runs` prints it.

Standard library only (below io), so the CLI can resolve a run before importing anything heavy.
"""

from __future__ import annotations

import os
from pathlib import Path

CONFIG = "config.json"  # every run folder has one (xpnn.runs.CONFIG)


def _is_run(folder: Path) -> bool:
    return folder.is_dir() and (folder / CONFIG).is_file()


def resolve_run(arg: str | os.PathLike, runs_root: str | os.PathLike = "runs") -> Path:
    """The run folder `arg` names: an existing run folder path, else `runs_root/arg`, else a unique id prefix.

    Raises FileNotFoundError saying where it looked (and the closest ids) when nothing matches, and
    ValueError when a prefix matches several runs.
    """
    given = Path(arg)
    root = Path(runs_root)
    if _is_run(given):
        return given
    if given.is_dir():
        raise FileNotFoundError(f"{given} is a folder but not a run folder (no {CONFIG}); pass a run's folder.")
    if len(given.parts) == 1 and root.is_dir():
        if _is_run(root / given.name):
            return root / given.name
        matches = sorted(p for p in root.iterdir() if p.name.startswith(given.name) and _is_run(p))
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            names = ", ".join(p.name for p in matches[:5])
            raise ValueError(f"run id {given.name!r} matches {len(matches)} runs in {root} ({names}); give more of it.")
        import difflib

        close = difflib.get_close_matches(given.name, [p.name for p in root.iterdir() if _is_run(p)], n=3)
        hint = f" Closest: {', '.join(close)}." if close else ""
        raise FileNotFoundError(f"no run {given.name!r} in {root} (see `xpnn runs`).{hint}")
    raise FileNotFoundError(f"no run folder at {given}, and no runs folder {root} to look up a run id in.")
