#!/usr/bin/env bash
# Buildroot post-image script for Gatehouse (BR2_ROOTFS_POST_IMAGE_SCRIPT):
#
#   post-image.sh BINARIES_DIR BOARD      (BOARD from BR2_ROOTFS_POST_SCRIPT_ARGS)
#
# Uses Buildroot's environment (BINARIES_DIR, TARGET_DIR, BUILD_DIR, HOST_DIR; tools
# from HOST_DIR/bin first), or, outside Buildroot (the offline checks), the tools on PATH
# and temp dirs. Makes, in BINARIES_DIR:
#   boot.scr                        U-Boot's A/B script (board/BOARD/boot.cmd, mkimage)
#   rpi-firmware/config.txt         the Pi's (rpi4_64 only)
#   sdcard.img | disk.img           the card (board/BOARD/genimage.cfg)
#   gatehouse-BOARD-VERSION.raucb   the update bundle of rootfs.ext4, signed with RAUC_KEY
#                                   and RAUC_CERT, or the development key
set -euo pipefail

binaries="${1:?usage: post-image.sh BINARIES_DIR BOARD}"
board="${2:?usage: post-image.sh BINARIES_DIR BOARD (set BR2_ROOTFS_POST_SCRIPT_ARGS)}"
board_common="$(cd "$(dirname "$0")" && pwd)"
board_dir="$(cd "$board_common/../$board" && pwd)"
root_dir="$(cd "$board_common/../.." && pwd)"
if [ -n "${HOST_DIR:-}" ]; then
    PATH="$HOST_DIR/bin:$HOST_DIR/sbin:$PATH"
fi

work="$(mktemp -d "${BUILD_DIR:-${TMPDIR:-/tmp}}/gatehouse-post-image.XXXXXX")"
trap 'rm -rf "$work"' EXIT

version="$("$board_common/version.sh" "$root_dir")"

# --- boot files ----------------------------------------------------------------------------
mkimage -A arm64 -O linux -T script -C none -n "gatehouse $board A/B" \
    -d "$board_dir/boot.cmd" "$binaries/boot.scr" >/dev/null
if [ -f "$board_dir/config.txt" ]; then
    install -D -m 0644 "$board_dir/config.txt" "$binaries/rpi-firmware/config.txt"
fi

# --- the card image ------------------------------------------------------------------------
# genimage wants an (empty here) root path: every image it makes is from BINARIES_DIR.
mkdir -p "$work/genimage-root" "$work/genimage-tmp"
genimage \
    --rootpath "$work/genimage-root" \
    --tmppath "$work/genimage-tmp" \
    --inputpath "$binaries" \
    --outputpath "$binaries" \
    --config "$board_dir/genimage.cfg"

# --- the RAUC bundle -------------------------------------------------------------------------
key="${RAUC_KEY:-}"
cert="${RAUC_CERT:-}"
if [ -z "$key" ] || [ -z "$cert" ]; then
    dev="$("$board_common/rauc-dev-keys.sh")"
    key="$dev/key.pem"
    cert="$dev/cert.pem"
fi
mkdir -p "$work/bundle"
cp "$binaries/rootfs.ext4" "$work/bundle/rootfs.ext4"
cat >"$work/bundle/manifest.raucm" <<MANIFEST
[update]
compatible=gatehouse-$board
version=$version
description=Gatehouse $version for $board

[bundle]
format=verity

[image.rootfs]
filename=rootfs.ext4
MANIFEST
bundle="$binaries/gatehouse-$board-$version.raucb"
rm -f "$bundle"
rauc bundle --cert="$cert" --key="$key" "$work/bundle" "$bundle"
echo "post-image: $(basename "$bundle") and the card image are in $binaries"
