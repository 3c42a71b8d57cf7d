"""Secret, token and password files: one reader, regular files of at most 4 KiB, errors naming the key; the web
token's length and the web.bind rule in check-config; `xray-agent new-token`."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from agent.config import check_files, load_config
from agent.pseudonym import load_secret
from agent.secretfile import MAX_SECRET_BYTES, SecretFileError, read_secret_bytes, read_secret_text
from tests.realparts import REPO

TOKEN = "t" * 43


def write_config(tmp_path, extra: str = "", key: str | None = None):
    site_key = tmp_path / "site.key"
    if not site_key.exists():
        site_key.write_text("a" * 64)
        site_key.chmod(0o600)
    path = tmp_path / "agent.toml"
    path.write_text(f'[site]\nid = "s"\nroom = "r"\nsecret_key_file = "{key or site_key}"\n'
                    f'[dicom]\nallowed_calling_aets = ["DR"]\n{extra}')
    return path


def odd_files(tmp_path) -> dict[str, str]:
    """Paths that are not small regular files, with the words the error must use."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    big = tmp_path / "big"
    big.write_bytes(b"x" * (MAX_SECRET_BYTES + 1))
    (tmp_path / "folder").mkdir()
    return {"/dev/zero": "character device", str(fifo): "FIFO", str(big): "more than a secret file may hold",
            str(tmp_path / "folder"): "folder", str(tmp_path / "missing"): "does not exist"}


def test_the_reader_refuses_devices_fifos_folders_and_big_files_without_reading_them(tmp_path):
    for path, words in odd_files(tmp_path).items():
        with pytest.raises(SecretFileError) as caught:
            read_secret_bytes("web.token_file", path)  # a FIFO without a writer would block a plain open()
        assert str(caught.value).startswith("web.token_file: ") and words in str(caught.value), path
    ok = tmp_path / "ok"
    ok.write_bytes(b" s3cret \n" + b"x" * (MAX_SECRET_BYTES - 9))
    assert len(read_secret_bytes("k", ok)) == MAX_SECRET_BYTES
    ok.write_text("  token\n")
    assert read_secret_text("k", ok) == "token"
    ok.write_bytes(b"\xff\xfe")
    with pytest.raises(SecretFileError, match="not UTF-8"):
        read_secret_text("mqtt.password_file", ok)
    with pytest.raises(SecretFileError, match="^site.secret_key_file: /dev/zero is not a regular file"):
        load_secret("/dev/zero")  # the agent's start reads the site secret through the same reader


@pytest.mark.parametrize("key", ["site.secret_key_file", "mqtt.password_file", "mqtt.key_file", "web.token_file"])
def test_check_config_names_the_key_of_an_odd_secret_file(tmp_path, key):
    for path, words in odd_files(tmp_path).items():
        extra = {"site.secret_key_file": "",
                 "mqtt.password_file": f'[mqtt]\nusername = "u"\npassword_file = "{path}"\n',
                 "mqtt.key_file": f'[mqtt]\nurl = "mqtts://127.0.0.1"\ncert_file = "{tmp_path / "c.pem"}"\n'
                                  f'key_file = "{path}"\n',
                 "web.token_file": f'[web]\ntoken_file = "{path}"\n'}[key]
        cfg = load_config(write_config(tmp_path, extra, key=path if key == "site.secret_key_file" else None))
        errors, _ = check_files(cfg)
        assert any(e.startswith(f"{key}: {path}") and words in e for e in errors), (path, errors)
        for other in os.listdir(tmp_path):
            if other.startswith("agent.toml"):
                os.unlink(tmp_path / other)


def test_web_token_length_and_bind_rules(tmp_path):
    token = tmp_path / "web.token"
    token.write_text("short-token\n")
    token.chmod(0o600)
    errors, _ = check_files(load_config(write_config(tmp_path, f'[web]\ntoken_file = "{token}"\n')))
    assert errors == [f"web.token_file: {token} holds 11 characters, fewer than 32; make a new one with: "
                      "xray-agent new-token PATH"]
    token.write_text(TOKEN + "\n")
    assert check_files(load_config(write_config(tmp_path, f'[web]\ntoken_file = "{token}"\n'))) == ([], [])
    errors, _ = check_files(load_config(write_config(tmp_path, '[web]\nbind = "10.1.2.3"\n')))
    assert errors and errors[0].startswith("web.bind = 10.1.2.3 makes the QC page and API reachable")
    _, warnings = check_files(load_config(write_config(
        tmp_path, f'[web]\nbind = "0.0.0.0"\ntoken_file = "{token}"\n')))
    assert any("web.public_names is empty" in w for w in warnings)
    assert check_files(load_config(write_config(
        tmp_path, f'[web]\nbind = "0.0.0.0"\ntoken_file = "{token}"\npublic_names = ["xr-03.lan"]\n'))) == ([], [])
    # A specific bind address is a name the server is reached by; 0.0.0.0 is not.
    specific = load_config(write_config(tmp_path, f'[web]\nbind = "10.1.2.3"\ntoken_file = "{token}"\n'))
    assert check_files(specific) == ([], []) and specific.web.reachable_names == ["10.1.2.3"]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "agent", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60)


def test_new_token_then_check_config_exit_codes(tmp_path):
    token = tmp_path / "etc" / "web.token"
    made = cli("new-token", str(token))
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and len(token.read_text().strip()) >= 32
    again = cli("new-token", str(token))
    assert again.returncode == 1 and "not overwriting" in again.stderr
    config = write_config(tmp_path, f'[web]\nbind = "0.0.0.0"\ntoken_file = "{token}"\npublic_names = ["a.lan"]\n')
    assert cli("check-config", str(config)).returncode == 0
    config = write_config(tmp_path, '[web]\nbind = "0.0.0.0"\n')
    refused = cli("check-config", str(config))
    assert refused.returncode == 2 and "error: web.bind = 0.0.0.0" in refused.stderr
    config = write_config(tmp_path, '[web]\ntoken_file = "/dev/zero"\n')
    refused = cli("check-config", str(config))
    assert refused.returncode == 2 and "error: web.token_file: /dev/zero is not a regular file" in refused.stderr


def test_the_cli_credential_is_group_readable_whatever_the_umask_and_changes_at_each_write(tmp_path):
    from agent.web.credential import cli_token_path, read_cli_token, write_cli_token

    cfg = load_config(write_config(tmp_path, f'[outbox]\npath = "{tmp_path / "state" / "outbox.db"}"\n'))
    assert read_cli_token(cfg) is None  # no agent has run: no credential
    old = os.umask(0o077)
    try:
        first = write_cli_token(cli_token_path(cfg))
    finally:
        os.umask(old)
    path = tmp_path / "state" / "web-cli.token"
    assert cli_token_path(cfg) == path and stat.S_IMODE(path.stat().st_mode) == 0o640
    assert read_cli_token(cfg) == first and len(first) >= 32
    assert write_cli_token(path) != first and [p.name for p in path.parent.iterdir()] == ["web-cli.token"]
