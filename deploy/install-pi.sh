#!/usr/bin/env bash
# Install facegate on Raspberry Pi OS Trixie (Debian 13) or Bookworm (Debian 12), 64-bit. Run as root from a
# checkout of the repository:
#   sudo deploy/install-pi.sh [--wiegand]
# --wiegand also installs the systemd drop-in a Wiegand output needs (systemd/facegate-wiegand.conf: real-time
# priority for its sender); a re-run keeps (and updates) a drop-in installed before.
# Idempotent: re-running upgrades the code and keeps /etc/facegate and /var/lib/facegate; a venv that has its own
# numpy (what older versions of this script left on Bookworm) is rebuilt on the system numpy.
# `make pi-check` runs exactly this script in emulated Debian bookworm and trixie arm64 (see docs/install-and-pi.md).
set -euo pipefail
SRC="$(cd "$(dirname "$0")/.." && pwd)"
DEST=/opt/facegate
VENV="$DEST/.venv"
WIEGAND=no
for arg in "$@"; do
  case "$arg" in
    --wiegand) WIEGAND=yes ;;
    *) echo "install-pi: unknown option '$arg' (known: --wiegand)" >&2; exit 2 ;;
  esac
done
pin() { python3 "$SRC/device/facegate/pi/numpy_pin.py" "$@"; }   # standard library only: runs before the venv

apt-get update
# picamera2 comes from Raspberry Pi OS's own packages (it binds libcamera), compiled against apt's numpy;
# lgpio drives GPIO on Pi 5 and 4.
apt-get install -y python3-venv python3-numpy python3-picamera2 python3-lgpio mosquitto-clients

# Raspberry Pi OS has the gpio group (its udev rules give it /dev/gpiochip*); plain Debian does not.
getent group gpio >/dev/null || groupadd --system gpio
id facegate >/dev/null 2>&1 || useradd --system --home-dir /var/lib/facegate --shell /usr/sbin/nologin facegate
usermod -a -G gpio,video facegate

mkdir -p "$DEST"
tar -C "$SRC" --exclude=./.venv --exclude=./build --exclude=./.git -cf - . | tar -C "$DEST" -xf -

# The venv sees apt's python3-picamera2, python3-lgpio and python3-numpy (system site packages) and must never
# get a numpy of its own: pip is constrained to the system numpy, and a resolution that installs numpy stops here.
if pin shadowed "$VENV"; then
  echo "install-pi: rebuilding $VENV on the system numpy"
  rm -rf "$VENV"
fi
pin constraints > "$DEST/constraints.txt"
python3 -m venv --system-site-packages "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
if ! "$VENV/bin/pip" install --quiet --dry-run --report "$DEST/pip-report.json" -c "$DEST/constraints.txt" -e "$DEST"; then
  # Was it the pin? Without it, the report names the numpy pip wanted and who wanted it (and check-report stops).
  "$VENV/bin/pip" install --quiet --dry-run --report "$DEST/pip-report.json" -e "$DEST" >/dev/null 2>&1 &&
    pin check-report "$DEST/pip-report.json"
  echo "install-pi: pip could not resolve facegate's dependencies (above); nothing was installed" >&2
  exit 1
fi
pin check-report "$DEST/pip-report.json"
"$VENV/bin/pip" install --quiet -c "$DEST/constraints.txt" -e "$DEST"
if pin shadowed "$VENV"; then exit 1; fi
# The service sees /opt read-only (ProtectSystem=strict), so bytecode it cannot write would be recompiled on every
# start: compile facegate and the venv's packages now (pip compiles what it installs; an editable facegate it
# does not).
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
"$VENV/bin/python" -m compileall -q -j 0 "$DEST/device" "$SITE" >/dev/null ||
  echo "install-pi: some modules did not byte-compile (they still run, compiled at each start)" >&2

install -d -m 0750 -o root -g facegate /etc/facegate
install -d -m 0700 -o facegate -g facegate /var/lib/facegate   # so 'facegate enroll' works before the first start
if [ ! -f /etc/facegate/facegate.toml ]; then
  install -m 0640 -o root -g facegate "$SRC/deploy/facegate.example.toml" /etc/facegate/facegate.toml
  echo "Edit /etc/facegate/facegate.toml (device_id, pins, broker, command key) before starting."
fi
"$SRC/deploy/web-cert.sh" /etc/facegate  # self-signed TLS pair for the web console ([web] in facegate.toml)
install -m 0644 "$SRC/systemd/facegate.service" /etc/systemd/system/facegate.service
DROPIN=/etc/systemd/system/facegate.service.d/wiegand.conf
if [ "$WIEGAND" = yes ] || [ -f "$DROPIN" ]; then
  install -D -m 0644 "$SRC/systemd/facegate-wiegand.conf" "$DROPIN"
elif grep -q '^\[wiegand\]' /etc/facegate/facegate.toml; then
  echo "install-pi: facegate.toml has [wiegand]: re-run with --wiegand for its real-time drop-in" >&2
fi
# Encryption at rest (docs/privacy.md): the key as a systemd encrypted credential, sealed with the TPM2 where the
# board has one (else with the host key, which facegate doctor reports as weak). Made once, kept on re-install;
# not when the door already runs with a key file (a new key would not open its files: see the rotation steps).
CRED=/etc/credstore.encrypted/facegate-key
KEYDROPIN=/etc/systemd/system/facegate.service.d/privacy-key.conf
if command -v systemd-creds >/dev/null 2>&1 && [ ! -f /var/lib/facegate/privacy.key ]; then
  if [ ! -f "$CRED" ]; then
    install -d -m 0700 /etc/credstore.encrypted
    head -c 32 /dev/urandom | systemd-creds encrypt --name=facegate-key - "$CRED"
  fi
  install -d -m 0755 "$(dirname "$KEYDROPIN")"
  printf '[Service]\nLoadCredentialEncrypted=facegate-key:%s\n' "$CRED" >"$KEYDROPIN"
else
  echo "install-pi: no systemd-creds (or a key file exists): the privacy key is the Pi's OTP key or a key file" >&2
fi
if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

# Stop on what makes the door unusable (numpy, models, runtime, camera or pin library, groups); a camera not yet
# connected, an empty gallery or an unreachable broker are printed as warnings.
if ! runuser -u facegate -- "$VENV/bin/facegate" doctor --installer --config /etc/facegate/facegate.toml >/dev/null; then
  echo "install-pi: facegate doctor found a problem the door cannot work with (above); fix it and re-run" >&2
  exit 1
fi
echo "Start with: systemctl enable --now facegate; logs: journalctl -u facegate -f"
