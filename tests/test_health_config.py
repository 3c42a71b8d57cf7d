"""The [health], [web] and [commands] sections: defaults, bad values named, file checks."""

from __future__ import annotations

import pytest

from agent.config import ConfigError, check_files, load_config

BASE = '[site]\nid = "s"\nroom = "r"\nsecret_key_file = "site.key"\n[dicom]\nallowed_calling_aets = ["DR"]\n'


def write(tmp_path, extra: str):
    (tmp_path / "site.key").write_text("a" * 64)
    (tmp_path / "site.key").chmod(0o600)
    path = tmp_path / "agent.toml"
    path.write_text(BASE + extra)
    return path


def test_defaults(tmp_path):
    cfg = load_config(write(tmp_path, ""))
    assert (cfg.health.interval_s, cfg.health.broker_grace_s, cfg.health.disk_floor_mib) == (60, 300, 512)
    assert (cfg.web.bind, cfg.web.port, cfg.web.loopback_only, cfg.web.token_file) == ("127.0.0.1", 8080, True, None)
    assert cfg.commands.enabled and cfg.commands.max_age_s == 60 and cfg.commands.session_expiry_s == 300
    assert check_files(cfg) == ([], [])


@pytest.mark.parametrize("extra, expected", [
    ('[web]\nbind = "localhost"\n', "web.bind: expected an IP address"),
    ("[web]\nport = 0\n", "web.port"),
    ("[health]\ninterval_s = 0\n", "health.interval_s"),
    ("[commands]\nmax_age = 5\n", "commands.max_age: unknown key"),
    ('[[instruments]]\nid = "broker-link"\ndriver = "ludlum_375"\nport = "/dev/ttyUSB0"\n',
     "instruments.0.id: 'broker-link' is reserved"),
    ('[[instruments]]\nid = "modality-x"\ndriver = "ludlum_375"\nport = "/dev/ttyUSB0"\n', "reserved"),
])
def test_bad_values_are_named(tmp_path, extra, expected):
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.").replace("(", r"\(")):
        load_config(write(tmp_path, extra))


def test_token_file_checks(tmp_path):
    (tmp_path / "web.token").write_text("\n")
    (tmp_path / "web.token").chmod(0o600)
    cfg = load_config(write(tmp_path, '[web]\nbind = "0.0.0.0"\ntoken_file = "web.token"\n'))
    assert cfg.web.token_file == tmp_path / "web.token"  # relative to the config file
    errors, _ = check_files(cfg)
    assert errors and errors[0].startswith("web.token_file:") and "is empty" in errors[0]
    # Beyond loopback without a token is an error now, not a warning (xray-agent check-config exits 2).
    errors, _ = check_files(load_config(write(tmp_path, '[web]\nbind = "0.0.0.0"\n')))
    assert any(e.startswith("web.bind = 0.0.0.0 makes the QC page and API reachable from other hosts") for e in errors)
