"""The host's cores shared among the processes scoring on it: each takes cores / busy processes threads.

Every scoring process touches a marker file named by its pid in one host-local folder before each network call and
counts the markers touched recently whose process is alive. Two `scanner worker` processes (or a worker and an
embedded `scanner submit`) on one host then run one thread each on two cores instead of two each, which would leave
OpenMP threads spinning for cores they do not get; when one goes idle, the other takes the cores back within
`recent_seconds`.
"""

from __future__ import annotations

import os
import stat
import tempfile
import time
from pathlib import Path

RECENT_SECONDS = 30.0


def default_folder() -> Path:
    """The per-user, host-local folder of markers (under the temporary folder, never a shared cache)."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"fauxscan-{uid}-scoring"


def _alive(pid: int) -> bool:
    """Whether a process with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class CoreShare:
    """This process's share of `cores` among the host's processes that scored in the last `recent_seconds`."""

    def __init__(self, cores: int, folder: Path | None = None, recent_seconds: float = RECENT_SECONDS) -> None:
        self.cores = max(1, cores)
        self.folder = folder or default_folder()
        self.recent_seconds = recent_seconds

    def _ready_folder(self) -> bool:
        """Create the folder private to this user; False when it is not ours to use (then nothing is shared)."""
        try:
            self.folder.mkdir(mode=0o700, exist_ok=True)
            info = self.folder.lstat()
        except OSError:
            return False
        owned = not hasattr(os, "getuid") or info.st_uid == os.getuid()
        return stat.S_ISDIR(info.st_mode) and owned

    def busy_processes(self) -> int:
        """Mark this process busy now and count the busy processes on the host, itself included."""
        if not self._ready_folder():
            return 1
        own = self.folder / str(os.getpid())
        try:
            own.touch()
        except OSError:
            return 1
        since, count = time.time() - self.recent_seconds, 0
        for marker in self.folder.iterdir():
            count += self._counts(marker, since)
        return max(1, count)

    def _counts(self, marker: Path, since: float) -> int:
        """1 for a marker of a live process touched since `since`; a dead process's marker is removed."""
        if not marker.name.isdigit():
            return 0
        try:
            touched = marker.stat().st_mtime
            if not _alive(int(marker.name)):
                marker.unlink()
                return 0
        except OSError:
            return 0
        return int(touched >= since)

    def threads(self) -> int:
        """Threads this process should score with now (at least 1)."""
        return max(1, self.cores // self.busy_processes())

    def leave(self) -> None:
        """Remove this process's marker (others take its cores back at their next call)."""
        try:
            (self.folder / str(os.getpid())).unlink()
        except OSError:
            pass
