"""Config validation as a biomed meets it: `xray-agent check-config` names the bad key and exits 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agent.config import ConfigError, check_files, load_config
from tests.realparts import REPO

GOOD = """
[site]
id = "stmarys"
room = "xr-03"
secret_key_file = "site.key"

[mqtt]
url = "mqtts://broker.hospital.example:8883"
username = "xr-03"
password_file = "broker.password"

[dicom]
allowed_calling_aets = ["DR_ROOM3"]
quarantine_dir = "quarantine"
"""


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "site.key").write_text("a" * 64)
    (tmp_path / "site.key").chmod(0o600)
    (tmp_path / "broker.password").write_text("secret\n")
    (tmp_path / "broker.password").chmod(0o640)
    return tmp_path


def check_config(path):
    return subprocess.run([sys.executable, "-m", "agent", "check-config", str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_good_config_resolves_relative_paths_and_defaults(folder):
    (folder / "agent.toml").write_text(GOOD)
    cfg = load_config(folder / "agent.toml")
    assert cfg.site.secret_key_file == folder / "site.key"
    assert cfg.mqtt.tls and cfg.mqtt.port == 8883 and cfg.mqtt.protocol == "5"
    assert cfg.client_id == "xray-agent-stmarys-xr-03"
    assert cfg.dicom.quarantine_dir == folder / "quarantine" and cfg.dicom.port == 11112
    assert len(cfg.config_hash) == 16
    assert check_files(cfg) == ([], [])
    result = check_config(folder / "agent.toml")
    assert result.returncode == 0 and "OK" in result.stdout


def test_example_config_in_repo_is_valid():
    cfg = load_config(REPO / "config" / "xray-agent.example.toml")
    assert cfg.mqtt.url == "mqtt://127.0.0.1:1883"


def test_unknown_key_exits_2_naming_the_key(folder):
    (folder / "agent.toml").write_text(GOOD.replace('username = "xr-03"', 'usrname = "xr-03"\nusername = "x"'))
    result = check_config(folder / "agent.toml")
    assert result.returncode == 2
    assert "mqtt.usrname: unknown key" in result.stderr


def test_malformed_toml_exits_2_with_line_number(folder):
    (folder / "agent.toml").write_text(GOOD.replace("[mqtt]", "[mqtt"))
    result = check_config(folder / "agent.toml")
    assert result.returncode == 2
    assert "not valid TOML" in result.stderr and "line" in result.stderr


@pytest.mark.parametrize("bad, key, expected", [
    ('id = "stmarys"', "site.id", "should match pattern"),
    ('url = "mqtts://broker.hospital.example:8883"', "mqtt.url", "expected mqtt://host"),
    ('room = "xr-03"', "site.room", "required key is missing"),
])
def test_bad_values_name_the_key_and_what_is_expected(folder, bad, key, expected):
    replacement = {"site.id": 'id = "st marys/3"', "mqtt.url": 'url = "http://broker"', "site.room": ""}[key]
    (folder / "agent.toml").write_text(GOOD.replace(bad, replacement))
    result = check_config(folder / "agent.toml")
    assert result.returncode == 2
    assert f"{key}:" in result.stderr and expected in result.stderr


def test_password_inline_in_url_is_refused(folder):
    (folder / "agent.toml").write_text(GOOD.replace("mqtts://broker", "mqtts://user:pw@broker"))
    with pytest.raises(ConfigError, match="credentials do not belong in the URL"):
        load_config(folder / "agent.toml")


def test_secret_readable_by_others_warns_and_missing_secret_fails(folder):
    (folder / "agent.toml").write_text(GOOD)
    (folder / "site.key").chmod(0o644)
    result = check_config(folder / "agent.toml")
    assert result.returncode == 0
    assert "site.secret_key_file" in result.stderr and "chmod o-rwx" in result.stderr
    (folder / "site.key").unlink()
    result = check_config(folder / "agent.toml")
    assert result.returncode == 2 and "xray-agent new-secret" in result.stderr


def test_run_with_bad_config_exits_2_without_starting(folder):
    (folder / "agent.toml").write_text(GOOD + "\n[outbox]\nmax_bytes = 10\n")
    result = subprocess.run([sys.executable, "-m", "agent", "run", "--config", str(folder / "agent.toml")],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "outbox.max_bytes" in result.stderr


def test_open_dicom_listener_warns_and_bad_peer_network_is_named(folder):
    (folder / "agent.toml").write_text(GOOD.replace('allowed_calling_aets = ["DR_ROOM3"]', ""))
    result = check_config(folder / "agent.toml")
    assert result.returncode == 0 and "dicom.allowed_calling_aets is empty" in result.stderr
    (folder / "agent.toml").write_text(GOOD.replace("[dicom]", '[dicom]\nallowed_peers = ["10.0.0.300"]'))
    result = check_config(folder / "agent.toml")
    assert result.returncode == 2 and "dicom.allowed_peers" in result.stderr and "10.0.0.300" in result.stderr


def test_privacy_modes_verbatim_warns_and_a_bad_mode_is_named(folder):
    (folder / "agent.toml").write_text(GOOD + '\n[privacy]\nfree_text = "verbatim"\ntime_resolution = "hour"\n')
    result = check_config(folder / "agent.toml")
    assert result.returncode == 0 and "privacy.free_text = 'verbatim'" in result.stderr
    assert load_config(folder / "agent.toml").privacy.time_resolution == "hour"
    (folder / "agent.toml").write_text(GOOD + '\n[privacy]\nfree_text = "catalog"\n')
    result = check_config(folder / "agent.toml")
    assert result.returncode == 0 and "every protocol and station is published as 'other'" in result.stderr
    for bad, key in (('free_text = "raw"', "privacy.free_text"), ('time_resolution = "second"',
                                                                   "privacy.time_resolution")):
        (folder / "agent.toml").write_text(GOOD + f"\n[privacy]\n{bad}\n")
        result = check_config(folder / "agent.toml")
        assert result.returncode == 2 and f"{key}:" in result.stderr, result.stderr
    (folder / "agent.toml").write_text(GOOD)
    assert "privacy" not in check_config(folder / "agent.toml").stderr, "the default (screened) needs no warning"


def test_overdue_instrument_calibration_warns(folder):
    (folder / "agent.toml").write_text(GOOD + '\n[[instruments]]\nid = "kvp-meter"\ndriver = "victoreen_4000m"\n'
                                       'port = "/dev/serial/by-id/usb-x"\ncalibration_due = 2020-01-31\n')
    result = check_config(folder / "agent.toml")
    assert result.returncode == 0, result.stderr
    assert "warning: instruments.0.calibration_due: kvp-meter's calibration expired on 2020-01-31" in result.stderr


def test_outbox_shares_adding_up_to_more_than_the_outbox_are_named(folder):
    (folder / "agent.toml").write_text(GOOD + "\n[outbox.shares]\ndicom = 0.8\nreadings = 0.3\n")
    result = check_config(folder / "agent.toml")
    assert result.returncode == 2
    assert "outbox.shares:" in result.stderr and "add up to 1.30 (dicom 0.8 + readings 0.3 + qc 0.15" in result.stderr


def test_check_config_says_what_mqtt_311_cannot_report(folder):
    (folder / "agent.toml").write_text(GOOD.replace('username = "xr-03"', 'protocol = "3.1.1"\nusername = "xr-03"'))
    result = check_config(folder / "agent.toml")
    assert result.returncode == 0, result.stderr
    assert "3.1.1 cannot tell the agent that the broker denied a publish" in result.stderr
    (folder / "agent.toml").write_text(GOOD)
    assert "3.1.1" not in check_config(folder / "agent.toml").stderr
