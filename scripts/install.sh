#!/usr/bin/env bash
# Installs, upgrades or removes xray-agent on a Debian / Raspberry Pi OS room PC. Run as root. Safe to run again:
# an upgrade replaces the program and the unit, and keeps the config, the site secret and the outbox.
#
#   bash scripts/install.sh                       install or upgrade from this checkout (pip needs the index)
#   bash scripts/install.sh --wheelhouse DIR      offline: dependencies from wheels made elsewhere with
#                                                 `pip wheel -w DIR /path/to/checkout 'setuptools>=77'`
#   bash scripts/install.sh --uninstall [--purge] remove the program and unit; --purge also config, data and user
#   --root DIR   install into DIR instead of / (tests, staging): no systemctl, the user is written into
#                DIR/etc/passwd and DIR/etc/group; the venv is usable in place only (its scripts name DIR)
#   --python PY  interpreter for the venv (default python3, >= 3.11)
set -euo pipefail

SOURCE="$(cd "$(dirname "$0")/.." && pwd)"
ROOT=""
WHEELHOUSE=""
PYTHON="python3"
MODE="install"
PURGE=0
USER_NAME="xray-agent"
SERIAL_GROUP="dialout"
DIALOUT_GID=20  # Debian's fixed gid, used when a --root tree has no dialout group yet

die() { echo "install.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT="$(realpath -m "${2:?--root needs a folder}")"; shift 2 ;;
    --wheelhouse) WHEELHOUSE="$(realpath "${2:?--wheelhouse needs a folder}")"; shift 2 ;;
    --python) PYTHON="${2:?--python needs an interpreter}"; shift 2 ;;
    --source) SOURCE="$(realpath "${2:?--source needs a checkout}")"; shift 2 ;;
    --uninstall) MODE="uninstall"; shift ;;
    --purge) PURGE=1; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[ "$PURGE" -eq 1 ] && [ "$MODE" != "uninstall" ] && die "--purge goes with --uninstall"

PREFIX="$ROOT/opt/xray-agent"
VENV="$PREFIX/venv"
ETC="$ROOT/etc/xray-agent"
STATE="$ROOT/var/lib/xray-agent"
LOGS="$ROOT/var/log/xray-agent"
UNIT="$ROOT/etc/systemd/system/xray-agent.service"
MODULES="$ROOT/etc/modules-load.d/xray-agent.conf"  # USB serial drivers at boot: the unit's DeviceAllow needs them
LINK="$ROOT/usr/local/bin/xray-agent"
AS_ROOT=1
[ "$(id -u)" -eq 0 ] || AS_ROOT=0
[ "$AS_ROOT" -eq 1 ] || [ -n "$ROOT" ] || die "run as root (sudo bash $0 ...)"

systemd_running() { [ -z "$ROOT" ] && [ -d /run/systemd/system ]; }

# ---- the service user ---------------------------------------------------------------------------------------------
# Without --root: useradd/groupadd. With --root: the passwd/group lines are written directly. `useradd --root DIR`
# would chroot into DIR, which needs root privileges and a usable system inside (login.defs, its own useradd
# configuration); a staging tree has neither. The lines written are those useradd --system writes.
field() { awk -F: -v name="$2" '$1 == name { print $'"$3"' }' "$1" 2>/dev/null || true; }

free_system_id() {  # highest id below 1000 used neither as a uid nor as a gid, as useradd --system picks
  local id
  for id in $(seq 999 -1 100); do
    if ! awk -F: -v id="$id" '$3 == id { found = 1 } END { exit !found }' "$ROOT/etc/passwd" "$ROOT/etc/group"; then
      echo "$id"; return
    fi
  done
  die "no free system id below 1000 in $ROOT/etc/passwd"
}

add_member() {  # add USER_NAME to a group line's member list in $ROOT/etc/group
  local group="$1"
  awk -F: -v OFS=: -v g="$group" -v u="$USER_NAME" '
    $1 == g { n = split($4, m, ","); for (i = 1; i <= n; i++) if (m[i] == u) { print; next }
              $4 = ($4 == "" ? u : $4 "," u) } { print }' "$ROOT/etc/group" > "$ROOT/etc/group.new"
  cat "$ROOT/etc/group.new" > "$ROOT/etc/group" && rm -f "$ROOT/etc/group.new"
}

ensure_user_in_root() {
  mkdir -p "$ROOT/etc"
  touch "$ROOT/etc/passwd" "$ROOT/etc/group"
  [ -n "$(field "$ROOT/etc/group" "$SERIAL_GROUP" 3)" ] || echo "$SERIAL_GROUP:x:$DIALOUT_GID:" >> "$ROOT/etc/group"
  if [ -z "$(field "$ROOT/etc/passwd" "$USER_NAME" 3)" ]; then
    local id
    id="$(free_system_id)"
    [ -n "$(field "$ROOT/etc/group" "$USER_NAME" 3)" ] || echo "$USER_NAME:x:$id:" >> "$ROOT/etc/group"
    echo "$USER_NAME:x:$id:$(field "$ROOT/etc/group" "$USER_NAME" 3):xray-agent:/var/lib/xray-agent:/usr/sbin/nologin" \
      >> "$ROOT/etc/passwd"
    [ ! -f "$ROOT/etc/shadow" ] || echo "$USER_NAME:!*:$(( $(date +%s) / 86400 ))::::::" >> "$ROOT/etc/shadow"
    [ ! -f "$ROOT/etc/gshadow" ] || echo "$USER_NAME:!::" >> "$ROOT/etc/gshadow"
    echo "==> created user $USER_NAME (uid $id) in $ROOT/etc/passwd"
  fi
  add_member "$SERIAL_GROUP"
}

ensure_user_on_system() {
  getent group "$USER_NAME" >/dev/null || groupadd --system "$USER_NAME"
  if ! id "$USER_NAME" >/dev/null 2>&1; then
    useradd --system --gid "$USER_NAME" --groups "$SERIAL_GROUP" --home-dir /var/lib/xray-agent --no-create-home \
      --shell /usr/sbin/nologin --comment "xray-agent" "$USER_NAME"
    echo "==> created user $USER_NAME"
  fi
  id -nG "$USER_NAME" | tr ' ' '\n' | grep -qx "$SERIAL_GROUP" || usermod -aG "$SERIAL_GROUP" "$USER_NAME"
}

ids() {  # sets UID_N and GID_N: the service user's numeric ids in the target root
  if [ -n "$ROOT" ]; then
    UID_N="$(field "$ROOT/etc/passwd" "$USER_NAME" 3)"; GID_N="$(field "$ROOT/etc/passwd" "$USER_NAME" 4)"
  else
    UID_N="$(id -u "$USER_NAME")"; GID_N="$(id -g "$USER_NAME")"
  fi
}

own() {  # own OWNER GROUP MODE PATH...: chown only as root (a --root run by another user keeps its own ids)
  local owner="$1" group="$2" mode="$3"; shift 3
  chmod "$mode" "$@"
  if [ "$AS_ROOT" -eq 1 ]; then chown "$owner:$group" "$@"; fi
}

# ---- install / upgrade --------------------------------------------------------------------------------------------
install_venv() {
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
    || die "$PYTHON is missing or older than 3.11 (Debian 12 / Raspberry Pi OS bookworm have 3.11)"
  "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || die "$PYTHON cannot create venvs: apt-get install python3-venv"
  if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  local pip_args=(--disable-pip-version-check --quiet --upgrade)
  [ -z "$WHEELHOUSE" ] || pip_args+=(--no-index --find-links "$WHEELHOUSE")
  echo "==> installing xray-agent from $SOURCE into $VENV"
  "$VENV/bin/python" -m pip install "${pip_args[@]}" "$SOURCE"
  install -D -m 0644 "$SOURCE/README.md" "$PREFIX/README.md"
  mkdir -p "$(dirname "$LINK")"
  ln -sfn /opt/xray-agent/venv/bin/xray-agent "$LINK"
}

install_config() {
  install -d "$ETC"
  own 0 "$GID_N" 0750 "$ETC"
  if [ ! -e "$ETC/agent.toml" ]; then
    # The example's relative paths would put the outbox under /etc, which the unit keeps read-only.
    sed -e 's#^secret_key_file = "site.key"#secret_key_file = "/etc/xray-agent/site.key"#' \
        -e 's#^path = "outbox.db"#path = "/var/lib/xray-agent/outbox.db"#' \
        -e 's#^quarantine_dir = "quarantine"#quarantine_dir = "/var/lib/xray-agent/quarantine"#' \
        "$SOURCE/config/xray-agent.example.toml" > "$ETC/agent.toml"
    own 0 "$GID_N" 0640 "$ETC/agent.toml"
    echo "==> wrote $ETC/agent.toml from the example: set site.id, site.room and the broker"
  fi
  if [ ! -e "$ETC/site.key" ]; then
    "$VENV/bin/xray-agent" new-secret "$ETC/site.key" >/dev/null
    own "$UID_N" "$GID_N" 0600 "$ETC/site.key"
    echo "==> created the site secret $ETC/site.key: every room of a site needs the same file; copy the site's"
    echo "    existing key over it before go-live if other rooms already run"
  fi
}

install_state() {
  install -d "$STATE" "$LOGS"
  own "$UID_N" "$GID_N" 0750 "$STATE" "$LOGS"
}

install_unit() {
  install -D -m 0644 "$SOURCE/systemd/xray-agent.service" "$UNIT"
  install -D -m 0644 "$SOURCE/systemd/xray-agent-modules.conf" "$MODULES"
  if systemd_running; then
    modprobe -a usbserial cdc_acm 2>/dev/null || echo "==> note: could not load usbserial/cdc_acm now; they load at boot"
    systemctl daemon-reload
    systemctl enable xray-agent.service >/dev/null
    if systemctl is-active --quiet xray-agent.service; then
      systemctl restart xray-agent.service && echo "==> restarted xray-agent (upgrade)"
    else
      echo "==> enabled xray-agent; after editing $ETC/agent.toml: xray-agent doctor && systemctl start xray-agent"
    fi
  else
    echo "==> installed $UNIT; systemd is not running here${ROOT:+ (--root)}. On the target, run:"
    echo "    systemctl daemon-reload && systemctl enable --now xray-agent"
  fi
}

do_install() {
  if [ -n "$ROOT" ]; then ensure_user_in_root; else ensure_user_on_system; fi
  ids
  [ -n "$UID_N" ] && [ -n "$GID_N" ] || die "cannot find user $USER_NAME"
  install_venv
  install_config
  install_state
  install_unit
  echo "==> done. Check the wiring with: xray-agent doctor --config /etc/xray-agent/agent.toml"
}

# ---- uninstall ----------------------------------------------------------------------------------------------------
remove_user() {
  if [ -z "$ROOT" ]; then
    ! id "$USER_NAME" >/dev/null 2>&1 || userdel "$USER_NAME"
    ! getent group "$USER_NAME" >/dev/null || groupdel "$USER_NAME"
    return
  fi
  local file
  for file in passwd group shadow gshadow; do
    [ -f "$ROOT/etc/$file" ] || continue
    awk -F: -v OFS=: -v u="$USER_NAME" '$1 == u { next }
      { n = split($4, m, ","); out = ""; for (i = 1; i <= n; i++) if (m[i] != u) out = out (out == "" ? "" : ",") m[i]
        if (FILENAME ~ /group$/ && NF >= 4) $4 = out; print }' "$ROOT/etc/$file" > "$ROOT/etc/$file.new"
    cat "$ROOT/etc/$file.new" > "$ROOT/etc/$file" && rm -f "$ROOT/etc/$file.new"
  done
}

do_uninstall() {
  if systemd_running; then
    systemctl disable --now xray-agent.service 2>/dev/null || true
  fi
  rm -f "$UNIT" "$MODULES"
  if systemd_running; then systemctl daemon-reload; fi
  [ "$(readlink "$LINK" 2>/dev/null)" != /opt/xray-agent/venv/bin/xray-agent ] || rm -f "$LINK"
  rm -rf "$PREFIX"
  if [ "$PURGE" -eq 1 ]; then
    rm -rf "$ETC" "$STATE" "$LOGS"
    remove_user
    echo "==> removed xray-agent, its config, data, logs and user"
  else
    echo "==> removed the program and the unit; kept $ETC, $STATE (outbox), $LOGS and user $USER_NAME"
    echo "    (--uninstall --purge removes them too)"
  fi
}

if [ "$MODE" = "install" ]; then do_install; else do_uninstall; fi
