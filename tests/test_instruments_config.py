"""`[[instruments]]` config: each mistake a biomed can make exits 2 from `xray-agent check-config` naming its key."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from agent.config import ConfigError, load_config
from drivers.ludlum import Ludlum375Settings
from drivers.profile import Profile
from drivers.victoreen import VictoreenSettings
from tests.realparts import REPO

BASE = """
[site]
id = "stmarys"
room = "xr-03"
secret_key_file = "site.key"

[dicom]
allowed_calling_aets = ["DR_ROOM3"]
"""

VICTOREEN = """
[[instruments]]
id = "kvp-meter"
driver = "victoreen_4000m"
port = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A12345-if00-port0"
settings = { target = "Mo", poll_interval_s = 0.25 }
"""


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "site.key").write_text("a" * 64)
    (tmp_path / "site.key").chmod(0o600)
    return tmp_path


def write(folder, *entries: str):
    path = folder / "agent.toml"
    path.write_text(BASE + "".join(entries))
    return path


def check_config(path):
    return subprocess.run([sys.executable, "-m", "agent", "check-config", str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_instruments_are_optional_and_default_to_none(folder):
    assert load_config(write(folder)).instruments == []


def test_driver_settings_are_built_from_the_entry(folder):
    profile = REPO / "config" / "profiles" / "ludlum_2363.toml"
    (folder / "profiles").mkdir()
    (folder / "profiles" / "survey.toml").write_text(profile.read_text())
    cfg = load_config(write(folder, VICTOREEN, """
[[instruments]]
id = "area-1"
driver = "ludlum_375"
port = "usb:0403:6001:A9XYZ"

[[instruments]]
id = "survey"
driver = "profile"
port = "/dev/ttyS0"
profile = "profiles/survey.toml"
settings = { poll_interval_s = 5.0 }
"""))
    victoreen, ludlum, survey = (inst.driver_settings() for inst in cfg.instruments)
    assert isinstance(victoreen, VictoreenSettings) and victoreen.target == "Mo" and victoreen.poll_interval_s == 0.25
    assert victoreen.instrument_id == "kvp-meter" and victoreen.port.startswith("/dev/serial/by-id/")
    assert isinstance(ludlum, Ludlum375Settings) and ludlum.port == "usb:0403:6001:A9XYZ"
    assert cfg.instruments[2].profile == folder / "profiles" / "survey.toml"  # relative to the config file
    assert isinstance(survey, Profile) and survey.name == "ludlum_2363" and survey.poll_interval_s == 5.0
    assert survey.instrument_id == "survey"


def test_unknown_driver_exits_2_naming_the_key_and_the_drivers(folder):
    result = check_config(write(folder, VICTOREEN.replace("victoreen_4000m", "victoreen_4000")))
    assert result.returncode == 2, result.stderr
    assert "instruments.0.driver: unknown driver 'victoreen_4000'" in result.stderr
    assert "ludlum_375, profile, ptw_diamentor, victoreen_4000m" in result.stderr


def test_misspelled_driver_setting_exits_2_naming_the_key(folder):
    result = check_config(write(folder, VICTOREEN.replace("poll_interval_s", "poll_intervall_s")))
    assert result.returncode == 2, result.stderr
    assert "instruments.0.settings.poll_intervall_s: unknown key" in result.stderr


@pytest.mark.parametrize("entry, key, expected", [
    (VICTOREEN.replace('target = "Mo"', 'target = "Cu"'), "instruments.0.settings.target", "'W' or 'Mo'"),
    (VICTOREEN.replace("settings = {", "settings = { baudrate = 0,"), "instruments.0.settings.baudrate",
     "greater than 0"),
    (VICTOREEN.replace('port = "/dev/serial', 'port = "ttyUSB0" #'), "instruments.0.port", "usb:VID:PID"),
    (VICTOREEN.replace('id = "kvp-meter"', 'id = "kvp meter/1"'), "instruments.0.id", "should match pattern"),
    (VICTOREEN.replace("settings = {", 'settings = { port = "/dev/ttyS1",'), "instruments.0.settings",
     "port belongs to the instrument entry"),
    (VICTOREEN + VICTOREEN.replace("/dev/serial/by-id/usb-FTDI", "/dev/serial/by-id/other"), "instruments",
     "instruments 0 and 1 have the same id 'kvp-meter'"),
    (VICTOREEN.replace('driver = "victoreen_4000m"', 'driver = "profile"'), "instruments.0",
     "driver 'profile' needs profile"),
    (VICTOREEN.replace('driver = "victoreen_4000m"', 'driver = "profile"\nprofile = "missing.toml"'),
     "instruments.0.profile", "cannot read profile"),
])
def test_each_bad_entry_names_its_key(folder, entry, key, expected):
    with pytest.raises(ConfigError) as err:
        load_config(write(folder, entry))
    line = next((ln for ln in str(err.value).splitlines() if f": {key}: " in ln), None)
    assert line is not None and expected in line, str(err.value)


def test_profile_with_an_error_names_the_file_and_its_key(folder):
    (folder / "bad.toml").write_text('name = "x"\nmode = "push"\n[[fields]]\nname = "kvp"\nregex = "no group"\n')
    entry = '\n[[instruments]]\nid = "p"\ndriver = "profile"\nport = "/dev/ttyS0"\nprofile = "bad.toml"\n'
    result = check_config(write(folder, entry))
    assert result.returncode == 2
    assert "instruments.0.profile: profile" in result.stderr and "fields.0.regex" in result.stderr


def test_example_config_instrument_block_is_valid_when_uncommented(folder):
    text = (REPO / "config" / "xray-agent.example.toml").read_text()
    block = text[text.index("# [[instruments]]"):]
    uncommented = "\n".join(line[2:] if re.match(r"^# (\[\[instruments\]\]|[a-z_]+ = )", line) else line
                            for line in block.splitlines())
    profile_dir = folder / "profiles"
    profile_dir.mkdir()
    for name in ("ludlum_2363", "vendor_csv_export", "ptw_unidos"):
        (profile_dir / f"{name}.toml").write_text((REPO / "config" / "profiles" / f"{name}.toml").read_text())
    cfg = load_config(write(folder, uncommented))
    assert [inst.driver for inst in cfg.instruments] == ["victoreen_4000m", "ptw_diamentor", "ludlum_375", "profile"]
    for inst in cfg.instruments:
        inst.driver_settings()
