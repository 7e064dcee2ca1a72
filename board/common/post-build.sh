#!/usr/bin/env bash
# Buildroot post-build script for Gatehouse (BR2_ROOTFS_POST_BUILD_SCRIPT), run after the
# rootfs overlay (board/common/rootfs-overlay) was copied into the target:
#
#   post-build.sh TARGET_DIR BOARD        (BOARD from BR2_ROOTFS_POST_SCRIPT_ARGS:
#                                          rpi4_64 or qemu_aarch64)
#
# - /usr/lib/os-release with the version of the workspace Cargo.toml ([workspace.package]
#   version: the one place the version is kept);
# - RAUC: the board's system.conf, and the keyring: the certificate RAUC_CERT, or the
#   development certificate (board/common/rauc-dev-keys.sh makes it when missing);
#   fw_env.config for U-Boot's environment;
# - enables the units (symlinks, as `systemctl enable` would make them);
# - dropbear's host keys on the data partition (/etc/dropbear -> /data/dropbear): the
#   root file system is read-only and replaced by updates, and Buildroot's dropbear
#   package points /etc/dropbear at /var/run/dropbear, a tmpfs, so the box would show
#   a new SSH host key after every boot;
# - the mount points /data and /boot.
set -euo pipefail

target="${1:?usage: post-build.sh TARGET_DIR BOARD}"
board="${2:?usage: post-build.sh TARGET_DIR BOARD (set BR2_ROOTFS_POST_SCRIPT_ARGS)}"
board_common="$(cd "$(dirname "$0")" && pwd)"
board_dir="$board_common/../$board"
root_dir="$(cd "$board_common/../.." && pwd)"
[ -d "$board_dir" ] || {
    echo "post-build: no board directory board/$board" >&2
    exit 1
}

version="$("$board_common/version.sh" "$root_dir")"

# --- os-release -------------------------------------------------------------------------
mkdir -p "$target/usr/lib"
cat >"$target/usr/lib/os-release" <<OSR
NAME="Gatehouse"
ID=gatehouse
ID_LIKE=buildroot
VERSION="$version ($board)"
VERSION_ID=$version
PRETTY_NAME="Gatehouse $version"
VARIANT_ID=$board
HOME_URL="https://github.com/gatehouse"
OSR
ln -sf ../usr/lib/os-release "$target/etc/os-release"

# --- RAUC -------------------------------------------------------------------------------
cert="${RAUC_CERT:-}"
if [ -z "$cert" ]; then
    cert="$("$board_common/rauc-dev-keys.sh")/cert.pem"
fi
install -D -m 0644 "$board_dir/rauc-system.conf" "$target/etc/rauc/system.conf"
install -D -m 0644 "$cert" "$target/etc/rauc/keyring.pem"
install -D -m 0644 "$board_common/fw_env.config" "$target/etc/fw_env.config"

# --- units ------------------------------------------------------------------------------
enable() { # enable UNIT TARGET
    mkdir -p "$target/etc/systemd/system/$2.wants"
    ln -sf "../$1" "$target/etc/systemd/system/$2.wants/$1"
}
enable data.mount local-fs.target
enable boot.mount local-fs.target
enable gatehouse-firewall.service sysinit.target
for unit in gatehouse-tunnel.service gatehouse-hub.service gatehouse-lora.service \
    mosquitto.service gatehouse-mqtt-sync.path gatehouse-firstboot.service \
    gatehouse-mark-good.service; do
    enable "$unit" multi-user.target
done

# --- dropbear ---------------------------------------------------------------------------
# A symlink, replacing Buildroot's (or its directory); tmpfiles.d/gatehouse.conf makes the
# target (0700 root) before dropbear.service starts.
rm -rf "$target/etc/dropbear"
ln -s /data/dropbear "$target/etc/dropbear"

mkdir -p "$target/data" "$target/boot"
