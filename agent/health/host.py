"""Host and process figures from psutil, read when asked (no background sampling).

CPU shares are deltas between two calls of one `CpuMeter`, so the periodic health sample and a Prometheus scrape
each measure their own interval without resetting the other's (psutil.cpu_percent keeps one global baseline).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import psutil


class CpuMeter:
    """Host busy share (% of all cores) and this process's share (% of one core) since the previous call."""

    def __init__(self) -> None:
        """The first reading covers the time since construction."""
        self._process = psutil.Process(os.getpid())
        self._host = psutil.cpu_times()
        self._proc = self._process_seconds()
        self._at = time.monotonic()

    def _process_seconds(self) -> float:
        times = self._process.cpu_times()
        return times.user + times.system

    def read(self) -> tuple[float, float]:
        """(host_percent, process_percent) since the previous read."""
        host, proc, now = psutil.cpu_times(), self._process_seconds(), time.monotonic()
        total = sum(host) - sum(self._host)
        idle = (host.idle + getattr(host, "iowait", 0.0)) - (self._host.idle + getattr(self._host, "iowait", 0.0))
        host_pct = 0.0 if total <= 0 else min(100.0, max(0.0, 100.0 * (total - idle) / total))
        elapsed = now - self._at
        proc_pct = 0.0 if elapsed <= 0 else max(0.0, 100.0 * (proc - self._proc) / elapsed)
        self._host, self._proc, self._at = host, proc, now
        return host_pct, proc_pct


@dataclass(frozen=True)
class HostFigures:
    """Memory, disk, temperature and uptime at one moment."""

    memory_percent: float
    memory_available_bytes: int
    rss_bytes: int
    disk_free_bytes: int
    disk_total_bytes: int
    temperature_c: float | None
    host_uptime_s: float


def existing_parent(path: Path) -> Path:
    """The nearest folder of path that exists (the outbox's folder may not exist before the first start)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def hottest_temperature() -> float | None:
    """The highest current reading of any temperature sensor, °C; None when the board reports none."""
    try:
        sensors = psutil.sensors_temperatures()
    except (AttributeError, OSError):
        return None
    readings = [entry.current for entries in sensors.values() for entry in entries if entry.current is not None]
    return max(readings) if readings else None


def host_figures(state_dir: Path) -> HostFigures:
    """Read every figure now; disk figures are for the file system holding state_dir."""
    memory = psutil.virtual_memory()
    disk = shutil.disk_usage(existing_parent(state_dir))
    return HostFigures(memory_percent=memory.percent, memory_available_bytes=memory.available,
                       rss_bytes=psutil.Process(os.getpid()).memory_info().rss, disk_free_bytes=disk.free,
                       disk_total_bytes=disk.total, temperature_c=hottest_temperature(),
                       host_uptime_s=max(0.0, time.time() - psutil.boot_time()))
