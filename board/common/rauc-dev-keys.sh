#!/usr/bin/env bash
# rauc-dev-keys.sh [DIR]: makes a development signing key and certificate for RAUC
# bundles in DIR (default <repo>/.cache/rauc-dev) if they are missing, and prints DIR.
#
#   DIR/key.pem    the signing key (EC P-256, 0600). Never committed: .cache/ is local.
#   DIR/cert.pem   the self-signed certificate; post-build.sh installs it as the image's
#                  keyring (/etc/rauc/keyring.pem), so the image accepts bundles signed
#                  with DIR/key.pem, and only those.
#
# For production, keep the key elsewhere and point RAUC_KEY / RAUC_CERT (post-build.sh,
# post-image.sh) at it.
set -euo pipefail

root_dir="$(cd "$(dirname "$0")/../.." && pwd)"
dir="${1:-$root_dir/.cache/rauc-dev}"

if [ -s "$dir/key.pem" ] && [ -s "$dir/cert.pem" ]; then
    printf '%s\n' "$dir"
    exit 0
fi
command -v openssl >/dev/null 2>&1 || {
    echo "rauc-dev-keys: openssl not found" >&2
    exit 1
}
mkdir -p "$dir"
chmod 0700 "$dir"
(
    umask 077
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$dir/key.pem.tmp" -out "$dir/cert.pem.tmp" -days 3650 \
        -subj "/O=Gatehouse development/CN=Gatehouse development RAUC signing key" \
        >/dev/null 2>&1
)
mv "$dir/key.pem.tmp" "$dir/key.pem"
mv "$dir/cert.pem.tmp" "$dir/cert.pem"
echo "rauc-dev-keys: made a development signing key in $dir (never commit it)" >&2
printf '%s\n' "$dir"
