"""Will a meter plugged in after the agent started be let through the unit's device policy?

systemd resolves `DeviceAllow=char-ttyUSB` / `char-ttyACM` through /proc/devices when the unit starts; a group whose
driver is not loaded then (usbserial registers ttyUSB, cdc_acm registers ttyACM, both on the first plug-in unless
loaded at boot) is left out of the unit's device filter, and opening the port later fails with "Operation not
permitted" until the agent restarts. The installer's /etc/modules-load.d/xray-agent.conf loads both at boot.
"""

from __future__ import annotations

from pathlib import Path

from agent.doctor.report import Result, ok, warn

# Device group -> the kernel module that registers it.
HOTPLUG_GROUPS = {"ttyUSB": "usbserial", "ttyACM": "cdc_acm"}
MODULES_LOAD_FILE = Path("/etc/modules-load.d/xray-agent.conf")


def char_groups(proc_devices: str) -> set[str]:
    """Names of the character device groups in /proc/devices text."""
    names = set()
    for line in proc_devices.split("Block devices:")[0].splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit():
            names.add(parts[1])
    return names


def check_hotplug(proc_devices: str, modules_load: str | None) -> Result:
    """`proc_devices`: /proc/devices text; `modules_load`: the modules-load.d file's text, or None when absent."""
    name = "serial hot-plug"
    listed = {line.strip() for line in (modules_load or "").splitlines() if line.strip() and not line.startswith("#")}
    missing = [group for group in HOTPLUG_GROUPS if group not in char_groups(proc_devices)]
    unlisted = [module for module in HOTPLUG_GROUPS.values() if module not in listed]
    fix = (f"install {MODULES_LOAD_FILE} (scripts/install.sh does; lines: {' '.join(HOTPLUG_GROUPS.values())}), run "
           f"modprobe -a {' '.join(HOTPLUG_GROUPS.values())}, then systemctl restart xray-agent")
    if missing:
        return warn(name, f"driver for {', '.join(missing)} is not loaded: the unit's DeviceAllow leaves those ports "
                          "out when it starts, so a meter plugged in later is refused until a restart", fix)
    if unlisted:
        return warn(name, f"{', '.join(unlisted)} loaded now but not at boot ({MODULES_LOAD_FILE}): after a reboot "
                          "a meter plugged in after the agent starts is refused until a restart", fix)
    return ok(name, f"{', '.join(HOTPLUG_GROUPS)} drivers loaded and listed in {MODULES_LOAD_FILE}")


def check_this_machine() -> Result:
    """check_hotplug on this machine's /proc/devices and modules-load.d file."""
    try:
        proc = Path("/proc/devices").read_text()
    except OSError:
        proc = ""
    try:
        listed = MODULES_LOAD_FILE.read_text()
    except OSError:
        listed = None
    return check_hotplug(proc, listed)
