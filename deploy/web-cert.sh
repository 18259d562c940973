#!/usr/bin/env bash
# A self-signed TLS certificate for the facegate web console (run as root; idempotent: keeps an existing pair).
#   sudo deploy/web-cert.sh [DIR]        # default DIR=/etc/facegate
# Then in facegate.toml:  [web] enabled = true, bind = "0.0.0.0",
#   tls_cert_file = "/etc/facegate/web-cert.pem", tls_key_file = "/etc/facegate/web-key.pem"
# Browsers warn about a self-signed certificate: compare the SHA-256 fingerprint printed below once, then trust it.
set -euo pipefail
DIR="${1:-/etc/facegate}"
CERT="$DIR/web-cert.pem"
KEY="$DIR/web-key.pem"
command -v openssl >/dev/null || apt-get install -y openssl
# Only a folder made here gets a mode: an existing one (/etc/facegate, a home directory) keeps its own.
[ -d "$DIR" ] || install -d -m 0750 "$DIR"
if [ ! -s "$CERT" ] || [ ! -s "$KEY" ]; then
  HOST="$(hostname)"
  IPS="$(hostname -I 2>/dev/null || true)"
  SAN="DNS:$HOST,DNS:$HOST.local,DNS:localhost,IP:127.0.0.1"
  for ip in $IPS; do SAN="$SAN,IP:$ip"; done
  umask 077
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -subj "/CN=$HOST facegate console" -addext "subjectAltName=$SAN" -keyout "$KEY" -out "$CERT"
fi
if getent group facegate >/dev/null; then chgrp facegate "$CERT" "$KEY"; fi
chmod 0640 "$CERT" "$KEY"
openssl x509 -in "$CERT" -noout -fingerprint -sha256
