"""Which programs the command services may run: those under the paths and directories the operator allows."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


def parse_allowed(setting: str) -> tuple[Path, ...]:
    """``MACHINERY_COMMANDS_ALLOWED``: paths and directories, separated by ``:`` as in ``PATH``."""
    return tuple(Path(entry.strip()) for entry in setting.split(os.pathsep) if entry.strip())


def commands_refusal(path: str, allowed: Sequence[Path]) -> str | None:
    """Why the program at ``path`` may not be run, given the paths and directories ``allowed``
    (``MACHINERY_COMMANDS_ALLOWED``); None when it may. Links are followed, so none leads out of them."""
    if not os.path.isabs(path):
        return f"{path!r} is not an absolute path"
    if not allowed:
        return "no program may be run: MACHINERY_COMMANDS_ALLOWED lists no path or directory"
    real = Path(os.path.realpath(path))
    for entry in allowed:
        root = Path(os.path.realpath(entry))
        if real == root or root in real.parents:
            return None
    listed = ", ".join(str(entry) for entry in allowed)
    return f"{path} is not under MACHINERY_COMMANDS_ALLOWED ({listed})"
