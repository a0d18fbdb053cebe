"""Can the registry, root in its container with every capability dropped, use a host file?

Without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, uid 0 gets ordinary permission checks:
the owner bits if it owns the file, else the group bits if the group is 0, else the
"other" bits. A key file that is 0600 and owned by a normal user is readable by the
supervisor (root with capabilities) yet not by the registry, which would then crash at
every start. ``container_root_can`` answers from a stat result (pure).
"""

from __future__ import annotations

import os
import stat

READ = 0o4
WRITE = 0o2
SEARCH = 0o1  # "execute" on a directory


def container_root_can(st: os.stat_result, need: int) -> bool:
    """Whether uid 0 / gid 0 without capabilities has ``need`` (READ|WRITE|SEARCH bits)."""
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid == 0:
        granted = (mode >> 6) & 0o7
    elif st.st_gid == 0:
        granted = (mode >> 3) & 0o7
    else:
        granted = mode & 0o7
    return granted & need == need
