"""Can the service user read or write a file or device node? Answered from the node's owner, group and mode against
the user's uid and groups, so `doctor` run as root checks what the agent (user xray-agent, group dialout) will meet
without opening anything: opening a serial port toggles DTR and could disturb the running agent's conversation.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServiceUser:
    """A user and every group it is in."""

    name: str
    uid: int
    gids: frozenset[int]

    @classmethod
    def lookup(cls, name: str) -> "ServiceUser | None":
        """The user from the passwd and group databases; None when it does not exist."""
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            return None
        gids = {entry.pw_gid} | {g.gr_gid for g in grp.getgrall() if name in g.gr_mem}
        return cls(name, entry.pw_uid, frozenset(gids))

    @classmethod
    def current(cls) -> "ServiceUser":
        """The user running this process."""
        uid = os.geteuid()
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = str(uid)
        return cls(name, uid, frozenset({os.getegid(), *os.getgroups()}))

    def group_names(self) -> str:
        """Its groups by name, for messages."""
        names = []
        for gid in sorted(self.gids):
            try:
                names.append(grp.getgrgid(gid).gr_name)
            except KeyError:
                names.append(str(gid))
        return ", ".join(names)


def can_access(path: Path, user: ServiceUser, read: bool = True, write: bool = False, search: bool = False) -> bool:
    """True when `user` may read / write / search (a folder) path by its permission bits (root may always)."""
    if user.uid == 0:
        return True
    st = os.stat(path)
    wanted = [(read, "R"), (write, "W"), (search, "X")]
    who = "USR" if st.st_uid == user.uid else "GRP" if st.st_gid in user.gids else "OTH"
    bits = 0
    for flag, kind in wanted:
        bits |= getattr(stat, f"S_I{kind}{who}") if flag else 0
    return st.st_mode & bits == bits


def reachable(path: Path, user: ServiceUser) -> bool:
    """True when user may search every folder leading to path."""
    return all(can_access(folder, user, read=False, search=True) for folder in Path(path).parents)


def describe_node(path: Path) -> str:
    """`owner:group mode` of a file, for messages."""
    st = os.stat(path)
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{owner}:{group} {stat.S_IMODE(st.st_mode):04o}"
