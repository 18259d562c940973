#!/usr/bin/env bash
# Install facegate on Raspberry Pi OS Bookworm (64-bit). Run as root from a checkout of the repository:
#   sudo deploy/install-pi.sh
# Idempotent: re-running upgrades the code and keeps /etc/facegate and /var/lib/facegate.
set -euo pipefail
SRC="$(cd "$(dirname "$0")/.." && pwd)"
DEST=/opt/facegate

apt-get update
# picamera2 comes from Raspberry Pi OS's own packages (it binds libcamera); lgpio drives GPIO on Pi 5 and 4.
apt-get install -y python3-venv python3-picamera2 python3-lgpio mosquitto-clients

id facegate >/dev/null 2>&1 || useradd --system --home-dir /var/lib/facegate --shell /usr/sbin/nologin facegate
usermod -a -G gpio,video facegate

mkdir -p "$DEST"
cp -a "$SRC/." "$DEST/"
# System site packages so the venv sees python3-picamera2 and python3-lgpio from apt.
python3 -m venv --system-site-packages "$DEST/.venv"
"$DEST/.venv/bin/pip" install --upgrade pip
"$DEST/.venv/bin/pip" install -e "$DEST"

install -d -m 0750 -o root -g facegate /etc/facegate
if [ ! -f /etc/facegate/facegate.toml ]; then
  install -m 0640 -o root -g facegate "$SRC/deploy/facegate.example.toml" /etc/facegate/facegate.toml
  echo "Edit /etc/facegate/facegate.toml (device_id, pins, broker, command key) before starting."
fi
"$SRC/deploy/web-cert.sh" /etc/facegate  # self-signed TLS pair for the web console ([web] in facegate.toml)
install -m 0644 "$SRC/systemd/facegate.service" /etc/systemd/system/facegate.service
systemctl daemon-reload
"$DEST/.venv/bin/facegate" doctor --config /etc/facegate/facegate.toml || true
echo "Start with: systemctl enable --now facegate; logs: journalctl -u facegate -f"
