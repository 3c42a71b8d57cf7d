"""The agent's configuration: one TOML file, validated by pydantic models that forbid unknown keys.

`load_config(path)` returns a `Config` or raises `ConfigError` whose message names each bad key path and what was
expected, so `xray-agent check-config` can print it and exit with status 2.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import stat
import tomllib
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agent.dicom.purpose import DEFAULT_NOT_A_PATIENT
from agent.dose.config import DoseConfig
from agent.health.config import MIN_WEB_TOKEN_CHARS, CommandsConfig, HealthConfig, WebConfig
from agent.instruments.config import InstrumentList, calibration_warnings
from agent.privacy.config import PrivacyConfig
from agent.qc.config import QcConfig
from agent.secretfile import SecretFileError, check_secret_file, read_secret_text

# Site and room ids become MQTT topic levels: no '/', '+', '#' or spaces, so a subscriber's wildcard stays meaningful.
TopicId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
MIB = 1024 * 1024
RESERVED_DEVICE_IDS = frozenset({"dicom-listener", "broker-link"})


class ConfigError(Exception):
    """A config file that cannot be used; the message names the file and each bad key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # TOML has inf and nan


class SiteConfig(Section):
    id: TopicId = Field(description="Site id, the second topic level (e.g. 'stmarys').")
    room: TopicId = Field(description="Room id, the third topic level (e.g. 'xr-03').")
    secret_key_file: Path = Field(description="File holding the per-site secret for pseudonymous references.")
    timezone: str = Field("UTC", description="Zone for DICOM times that carry no offset (IANA name).")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as 'Europe/London'") from None
        return value


class MqttConfig(Section):
    url: str = Field("mqtt://127.0.0.1:1883", description="mqtt://host[:port] or mqtts://host[:port].")
    protocol: Literal["5", "3.1.1"] = Field("5", description="MQTT protocol version.")
    client_id: str = Field("", description="Defaults to xray-agent-{site}-{room}.")
    topic_prefix: str = Field("xray/v1", pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
    username: str = ""
    password_file: Path | None = Field(None, description="File holding the broker password (never inline).")
    ca_file: Path | None = Field(None, description="CA bundle for mqtts://; system CAs when unset.")
    cert_file: Path | None = Field(None, description="Client certificate for mutual TLS.")
    key_file: Path | None = Field(None, description="Client private key for mutual TLS (a secret file).")
    keepalive_s: int = Field(30, ge=5, le=3600)
    max_inflight: int = Field(200, ge=1, le=65535, description="Unacknowledged QoS 1 publishes allowed at once.")
    reconnect_min_s: float = Field(0.5, gt=0, le=60)
    reconnect_max_s: float = Field(30.0, gt=0, le=3600)

    @field_validator("url")
    @classmethod
    def _valid_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("expected mqtt://host[:port] or mqtts://host[:port]")
        if parts.username or parts.password:
            raise ValueError("credentials do not belong in the URL; use mqtt.username and mqtt.password_file")
        parts.port  # raises ValueError for a non-numeric or out-of-range port
        return value

    @model_validator(mode="after")
    def _tls_consistent(self) -> "MqttConfig":
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (mutual TLS needs both)")
        if self.password_file is not None and not self.username:
            raise ValueError("password_file is set but username is empty")
        return self

    @property
    def tls(self) -> bool:
        """True for mqtts:// URLs."""
        return urlsplit(self.url).scheme == "mqtts"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (8883 if self.tls else 1883)


class OutboxShares(Section):
    """Fraction of outbox.max_bytes each intake class may hold, so one class cannot starve another."""

    dicom: float = Field(0.55, gt=0, le=1, description="Exposures, dose-summary, dose-alert and summary messages.")
    readings: float = Field(0.25, gt=0, le=1, description="Serial meter readings (qc/reading).")
    qc: float = Field(0.15, gt=0, le=1, description="QC session records (qc/session).")
    telemetry: float = Field(0.05, gt=0, le=1, description="Status, health and equipment states (coalesced: one "
                                                           "undelivered sample per topic, never refused).")

    @model_validator(mode="after")
    def _fit(self) -> "OutboxShares":
        parts = self.model_dump()
        total = sum(parts.values())
        if total > 1.0 + 1e-9:
            terms = " + ".join(f"{name} {value:g}" for name, value in parts.items())
            raise ValueError(f"the shares add up to {total:.2f} ({terms}; unset ones take their defaults); they are "
                             "fractions of max_bytes and must add up to at most 1")
        return self


class OutboxConfig(Section):
    path: Path = Field(Path("/var/lib/xray-agent/outbox.db"), description="SQLite file of the durable outbox.")
    max_bytes: int = Field(256 * MIB, ge=MIB, description="Payload bytes held before exposure-class enqueues are refused.")
    telemetry_max_age_s: float = Field(86400, gt=0, description="Undelivered status/health samples older than this expire.")
    dedupe_days: float = Field(30, gt=0, description="How long delivered msg_ids are remembered to drop re-sends.")
    shares: OutboxShares = OutboxShares()
    check_every_s: float = Field(900, ge=1, description="Integrity check (PRAGMA quick_check) of every state database "
                                                        "while running, every this many seconds; also at start.")


class FolderIntakeConfig(Section):
    path: Path = Field(description="Folder the modality exports DICOM files to.")
    settle_s: float = Field(2.0, ge=0, description="A file is read once its size has not changed for this long.")
    incomplete_wait_s: float = Field(300.0, ge=0, description="How long a settled file that is still open by its "
                                     "writer or ends part-way is waited for before it is quarantined (and kept).")
    poll_s: float = Field(1.0, gt=0, description="How often the folder is scanned.")
    after: Literal["delete", "move", "keep"] = Field("delete", description="What to do with a processed file.")
    move_to: Path | None = Field(None, description="Folder for processed files when after = 'move'.")

    @model_validator(mode="after")
    def _move_needs_target(self) -> "FolderIntakeConfig":
        if self.after == "move" and self.move_to is None:
            raise ValueError("after = 'move' needs move_to (the folder processed files go to)")
        return self


class DicomConfig(Section):
    enabled: bool = Field(True, description="Run the C-STORE SCP.")
    ae_title: str = Field("XRAYAGENT", pattern=r"^[\x20-\x5b\x5d-\x7e]{1,16}$",
                          description="Our AE title (1-16 characters, no backslash).")
    bind: str = Field("0.0.0.0", description="Address to listen on.")
    port: int = Field(11112, ge=1, le=65535)
    allowed_calling_aets: list[str] = Field(default_factory=list,
                                            description="Calling AE titles accepted; empty accepts any (a warning).")
    allowed_peers: list[str] = Field(default_factory=list,
                                     description="Peer addresses or networks (CIDR) accepted; empty accepts any.")
    quarantine_dir: Path = Field(Path("/var/lib/xray-agent/quarantine"),
                                 description="Where objects that cannot be parsed are kept for inspection.")
    quarantine_max_bytes: int = Field(512 * MIB, ge=0)
    quarantine_max_files: int = Field(500, ge=0)
    retain_raw_dir: Path | None = Field(None, description="Keep received objects here (off when unset).")
    retain_raw_max_bytes: int = Field(2048 * MIB, ge=0)
    include_age_sex: bool = Field(True, description="Publish patient age (whole years, capped at 90) and sex, and "
                                                    "patient weight and size.")
    max_associations: int = Field(16, ge=1, le=256, description="Associations at once (and, apart, connections "
                                  "still to send their association request).")
    max_associations_per_peer: int = Field(4, ge=1, le=256, description="Connections at once from one address.")
    associate_timeout_s: float = Field(10.0, gt=0, le=300, description="A connection must send its complete "
                                       "association request within this time.")
    pdu_timeout_s: float = Field(60.0, gt=0, le=3600, description="On an association, the next complete PDU must "
                                 "arrive within this time (idle associations end after it too).")
    max_object_bytes: int = Field(1024 * MIB, ge=MIB, description="Largest data set accepted (inflated size for the "
                                  "deflated transfer syntax); larger ones get Out of Resources (0xA700).")
    not_a_patient: list[str] = Field(
        default_factory=lambda: list(DEFAULT_NOT_A_PATIENT),
        description="Regular expressions (case-insensitive, searched) that mark an object as QC, not a patient, when "
                    "found in its patient name or ID, study or series description or protocol: its exposures are "
                    "published with purpose \"qc\" and left out of dose monitoring.")
    folder: FolderIntakeConfig | None = None

    @field_validator("not_a_patient")
    @classmethod
    def _valid_patterns(cls, values: list[str]) -> list[str]:
        from agent.dicom.purpose import compiled

        compiled(tuple(values))  # ValueError naming a pattern RE2 cannot compile
        return values

    @model_validator(mode="after")
    def _own_folders_apart(self) -> "DicomConfig":
        """The folders the agent writes (quarantine, retention, moved files) are its own: two bounded folders on one
        folder share one index and trim each other's copies; a watched folder inside one of them reads the agent's
        copies back and quarantines them again, for ever. (One inside the watched folder is skipped by the watcher.)"""
        own = {"dicom.quarantine_dir": self.quarantine_dir, "dicom.retain_raw_dir": self.retain_raw_dir}
        if self.folder is not None and self.folder.move_to is not None:
            own["dicom.folder.move_to"] = self.folder.move_to
        real = {key: Path(os.path.realpath(path)) for key, path in own.items() if path is not None}
        keys = list(real)
        for i, key in enumerate(keys):
            for other in keys[:i]:
                if real[key] == real[other]:
                    raise ValueError(f"{key} is the same folder as {other}: give each its own folder")
        if self.folder is not None:
            watched = Path(os.path.realpath(self.folder.path))
            for key, folder in real.items():
                if watched == folder or folder in watched.parents:
                    what = "is" if watched == folder else "is inside"
                    if key == "dicom.folder.move_to" and watched != folder:
                        continue  # the export folder under the moved-files folder: the watcher reads only its own
                    raise ValueError(f"dicom.folder.path {what} {key} ({folder}): the watched folder would read "
                                     "the agent's own files back; give the watched folder its own place")
        return self

    @field_validator("allowed_peers")
    @classmethod
    def _valid_networks(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise ValueError(f"{value!r} is not an IP address or network (e.g. 10.1.2.3 or 10.1.2.0/24)") from None
        return values


class LoggingConfig(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Config(Section):
    site: SiteConfig
    mqtt: MqttConfig = MqttConfig()
    outbox: OutboxConfig = OutboxConfig()
    dicom: DicomConfig = DicomConfig()
    dose: DoseConfig = DoseConfig()  # dose monitoring; the rules live in their own file (agent/dose/rules.py)
    privacy: PrivacyConfig = PrivacyConfig()  # free-text screening and time resolution of published values
    logging: LoggingConfig = LoggingConfig()
    health: HealthConfig = HealthConfig()
    web: WebConfig = WebConfig()
    commands: CommandsConfig = CommandsConfig()
    qc: QcConfig = QcConfig()  # QC sessions: technique matching and the limits ([qc.limits], US defaults)
    instruments: InstrumentList = Field(default_factory=list)

    # Where the file was read from and its hash; set by load_config, not by the file.
    source_path: Path | None = Field(None, exclude=True)
    config_hash: str = Field("", exclude=True)

    @model_validator(mode="after")
    def _agent_device_ids_free(self) -> "Config":
        # The agent publishes its own devices on equipment/{id}; an instrument must not overwrite one of them.
        for index, inst in enumerate(self.instruments):
            if inst.id in RESERVED_DEVICE_IDS or inst.id.startswith("modality-"):
                raise ValueError(f"instruments.{index}.id: {inst.id!r} is reserved for the agent's own equipment "
                                 f"status ({', '.join(sorted(RESERVED_DEVICE_IDS))}, modality-*); choose another id")
        return self

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"xray-agent-{self.site.id}-{self.site.room}"


def _format_loc(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def format_validation_error(path: Path, err: ValidationError) -> str:
    """One line per problem: `file: key.path: what is wrong (got value)`."""
    lines = []
    for item in err.errors():
        where = _format_loc(item["loc"])
        if item["type"] == "extra_forbidden":
            lines.append(f"{path}: {where}: unknown key (check the spelling against config/xray-agent.example.toml)")
        elif item["type"] == "missing":
            lines.append(f"{path}: {where}: required key is missing")
        else:
            msg = item["msg"].removeprefix("Value error, ")
            lines.append(f"{path}: {where}: {msg} (got {item.get('input')!r})")
    return "\n".join(lines)


def _resolve_paths(raw: dict, base: Path) -> None:
    """Make relative file paths in the config relative to the config file's folder, not to the working directory."""
    for section, keys in {"site": ["secret_key_file"], "outbox": ["path"],
                          "mqtt": ["password_file", "ca_file", "cert_file", "key_file"],
                          "dicom": ["quarantine_dir", "retain_raw_dir"], "dicom.folder": ["path", "move_to"],
                          "web": ["token_file"],
                          "dose": ["rules_file", "state_path"],
                          "instruments": ["profile"]}.items():
        table = raw
        for part in section.split("."):
            table = table.get(part) if isinstance(table, dict) else None
        # An array of tables ([[instruments]]) resolves in each of its entries.
        for entry in table if isinstance(table, list) else [table]:
            if not isinstance(entry, dict):
                continue
            for key in keys:
                value = entry.get(key)
                if isinstance(value, str) and value and not os.path.isabs(value):
                    entry[key] = str(base / value)


def load_config(path: Path | str) -> Config:
    """Read and validate a config file; raise ConfigError naming every bad key."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    _resolve_paths(raw, path.parent.resolve())
    for key in ("source_path", "config_hash"):
        if key in raw:
            raise ConfigError(f"{path}: {key}: unknown key")
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(path, exc)) from None
    return cfg.model_copy(update={"source_path": path, "config_hash": hashlib.sha256(data).hexdigest()[:16]})


def _web_access_errors(cfg: Config) -> list[str]:
    """web.bind beyond loopback needs a token; a token must be long enough to withstand guessing."""
    web = cfg.web
    if web.token_file is None:
        if web.enabled and not web.loopback_only:
            return [f"web.bind = {web.bind} makes the QC page and API reachable from other hosts: set "
                    "web.token_file (create one with: xray-agent new-token PATH), or bind 127.0.0.1"]
        return []
    try:
        check_secret_file("web.token_file", web.token_file)
    except SecretFileError:
        return []  # reported with the other secret files
    try:
        token = read_secret_text("web.token_file", web.token_file)
    except SecretFileError as exc:
        # Another user's file (check-config run by a person): the agent reads it as its own user and says so there.
        return [] if exc.denied else [str(exc)]
    if not token:
        return [f"web.token_file: {web.token_file} is empty; make a token with: xray-agent new-token PATH"]
    if len(token) < MIN_WEB_TOKEN_CHARS:
        return [f"web.token_file: {web.token_file} holds {len(token)} characters, fewer than {MIN_WEB_TOKEN_CHARS}; "
                "make a new one with: xray-agent new-token PATH"]
    return []


def secret_files(cfg: Config) -> dict[str, Path]:
    """The config's secret files by key path."""
    files = {"site.secret_key_file": cfg.site.secret_key_file}
    if cfg.mqtt.password_file:
        files["mqtt.password_file"] = cfg.mqtt.password_file
    if cfg.mqtt.key_file:
        files["mqtt.key_file"] = cfg.mqtt.key_file
    if cfg.web.token_file:
        files["web.token_file"] = cfg.web.token_file
    return files


def check_files(cfg: Config) -> tuple[list[str], list[str]]:
    """Check the files the config names. Returns (errors, warnings) as printable lines."""
    errors, warnings = [], []
    for key, file in secret_files(cfg).items():
        try:
            mode = check_secret_file(key, file).st_mode
        except SecretFileError as exc:
            hint = " (create one with: xray-agent new-secret PATH)" if key == "site.secret_key_file" else ""
            errors.append(f"{exc}{hint}" if "does not exist" in str(exc) else str(exc))
            continue
        if mode & (stat.S_IROTH | stat.S_IWOTH):
            warnings.append(f"{key}: {file} is accessible by other users (mode {stat.S_IMODE(mode):04o}); "
                            f"run: chmod o-rwx {file}")
    errors += _web_access_errors(cfg)
    for key in ("ca_file", "cert_file"):
        file = getattr(cfg.mqtt, key)
        if file is not None and not file.exists():
            errors.append(f"mqtt.{key}: {file} does not exist")
    warnings += cfg.privacy.warnings()
    if cfg.dicom.enabled and not cfg.dicom.allowed_calling_aets:
        warnings.append("dicom.allowed_calling_aets is empty: any calling AE title may send objects; "
                        "list the modality's AE title")
    if cfg.web.enabled and ipaddress.ip_address(cfg.web.bind).is_unspecified and not cfg.web.public_names:
        warnings.append(f"web.bind = {cfg.web.bind} but web.public_names is empty: browsers and scrapers on other "
                        "hosts are refused (421) until the names and addresses they use are listed there")
    if cfg.mqtt.ca_file and not cfg.mqtt.tls:
        warnings.append("mqtt.ca_file is set but mqtt.url is mqtt:// (plain text); use mqtts:// to encrypt")
    warnings += calibration_warnings(cfg.instruments)
    return errors, warnings
