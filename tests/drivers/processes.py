"""What is left of a process group, for tests that stop pipelines."""

from __future__ import annotations

from pathlib import Path


def live_members(group: int) -> list[int]:
    """Processes of a process group that have not exited (zombies excluded: a container's
    init may not reap the orphans)."""
    members = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            members.append(int(stat_file.parent.name))
    return members
