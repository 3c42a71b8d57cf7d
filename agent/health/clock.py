"""Is the system clock synchronised? The kernel knows: NTP daemons (systemd-timesyncd, chrony, ntpd) clear
STA_UNSYNC in the kernel's time status once they have disciplined the clock, and `adjtimex` with modes = 0 reads it
without privileges (timedatectl's NTPSynchronized is computed the same way, by timedated).

Under the hardened unit the seccomp filter (@system-service) denies adjtimex with EPERM; then
`timedatectl show -p NTPSynchronized --value` asks timedated over D-Bus instead. Neither available: "unknown".
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass

TIME_ERROR = 5  # adjtimex return value: clock not synchronised
STA_UNSYNC = 0x0040
CACHE_S = 30.0  # the state changes slowly; scrapes and samples within this share one answer
TIMEDATECTL_TIMEOUT_S = 3.0


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    """struct timex of <sys/timex.h> (Linux), up to `tai`, padded as the kernel's."""

    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
                ("time", _Timeval), ("tick", ctypes.c_long), ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long),
                ("shift", ctypes.c_int), ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long),
                ("calcnt", ctypes.c_long), ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long),
                ("tai", ctypes.c_int), ("_padding", ctypes.c_int * 11)]


@dataclass(frozen=True)
class ClockState:
    """synchronized / unsynchronized / unknown, where the answer came from, and the kernel's error bound."""

    sync: str
    source: str
    max_error_s: float | None = None


def _adjtimex() -> ClockState | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the C library already loaded into this process (no ldconfig run)
        timex = _Timex()  # modes = 0: read only
        state = libc.adjtimex(ctypes.byref(timex))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None  # EPERM from a seccomp filter, or not Linux
    synced = state != TIME_ERROR and not timex.status & STA_UNSYNC
    return ClockState("synchronized" if synced else "unsynchronized", "adjtimex", timex.maxerror / 1e6)


def _timedatectl() -> ClockState | None:
    exe = shutil.which("timedatectl")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "show", "-p", "NTPSynchronized", "--value"], capture_output=True, text=True,
                             timeout=TIMEDATECTL_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = out.stdout.strip()
    if out.returncode != 0 or value not in ("yes", "no"):
        return None  # no D-Bus or no timedated (containers)
    return ClockState("synchronized" if value == "yes" else "unsynchronized", "timedatectl")


_cache: tuple[float, ClockState] | None = None
_lock = threading.Lock()


def clock_state(max_age_s: float = CACHE_S) -> ClockState:
    """The clock's synchronisation state, at most max_age_s old."""
    global _cache
    with _lock:
        now = time.monotonic()
        if _cache is None or now - _cache[0] > max_age_s:
            _cache = (now, _adjtimex() or _timedatectl() or ClockState("unknown", "none"))
        return _cache[1]
