#!/usr/bin/env bash
# The door screen: Chromium in kiosk mode on the Pi's own display, showing the console's /terminal page.
#   sudo deploy/kiosk.sh [URL]          # default URL=http://127.0.0.1:8443/terminal (or https:// with TLS)
# Needs Raspberry Pi OS with desktop (labwc/wayfire or X11) and desktop auto-login for the user given in
# KIOSK_USER (default: the first user, uid 1000). The page needs no login from the device itself and shows
# nothing else; remove with: rm ~KIOSK_USER/.config/autostart/facegate-kiosk.desktop
set -euo pipefail
URL="${1:-http://127.0.0.1:8443/terminal}"
USER_NAME="${KIOSK_USER:-$(getent passwd 1000 | cut -d: -f1)}"
HOME_DIR="$(getent passwd "$USER_NAME" | cut -d: -f6)"
apt-get install -y chromium || apt-get install -y chromium-browser
BIN="$(command -v chromium || command -v chromium-browser)"
install -d -o "$USER_NAME" -g "$USER_NAME" "$HOME_DIR/.config/autostart"
# --ignore-certificate-errors only for the self-signed certificate of this very device, on loopback.
EXTRA=""
case "$URL" in https://127.0.0.1*|https://localhost*) EXTRA="--ignore-certificate-errors" ;; esac
cat > "$HOME_DIR/.config/autostart/facegate-kiosk.desktop" <<DESKTOP
[Desktop Entry]
Type=Application
Name=facegate door screen
Exec=$BIN --kiosk --noerrdialogs --disable-infobars --no-first-run --disable-session-crashed-bubble --disable-sync --disable-background-networking --check-for-update-interval=31536000 $EXTRA $URL
X-GNOME-Autostart-enabled=true
DESKTOP
chown "$USER_NAME:$USER_NAME" "$HOME_DIR/.config/autostart/facegate-kiosk.desktop"
echo "Door screen set up for $USER_NAME: $URL (starts at the next desktop login)."
