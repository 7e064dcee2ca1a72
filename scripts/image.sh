#!/usr/bin/env bash
# Builds the Gatehouse SD image with Buildroot, and boots the qemu one.
#
#   scripts/image.sh build BOARD   BOARD = rpi4_64 | qemu_aarch64   (make image BOARD=...)
#   scripts/image.sh qemu          boot output/qemu_aarch64/images      (make qemu)
#
# build, on a machine with internet:
#   1. fetches Buildroot $BUILDROOT_VERSION into .cache/ and checks its sha256 against the
#      pin below (an unverified tree is never used; a failed download says so and stops);
#   2. checks our external tree against it (scripts/check-br2-symbols.sh --buildroot:
#      every symbol we rely on exists in this Buildroot, and its host Rust is at least the
#      workspace's rust-version) and runs its utils/check-package;
#   3. merges Buildroot's defconfig for the board, buildroot/configs/gatehouse_common.fragment
#      and buildroot/configs/gatehouse_BOARD_defconfig with support/kconfig/merge_config.sh
#      into output/BOARD/.config, runs olddefconfig, and fails if kconfig dropped any line
#      of ours (a dependency not met);
#   4. configures the kernel and fails if it dropped any option of buildroot/linux/*.fragment;
#   5. builds (downloads into .cache/dl, BR2_DL_DIR; output/BOARD is Buildroot's O=).
# The image is output/BOARD/images/ (sdcard.img or disk.img, and the RAUC bundle).
#
# qemu: qemu-system-aarch64 (Debian's) on output/qemu_aarch64/images: U-Boot as firmware,
# the disk on virtio, an i6300esb watchdog, and user networking forwarding host UDP
# $QEMU_WG_PORT (51820) to WireGuard and host TCP $QEMU_HTTPS_PORT (8443) to the console.
# Quit with Ctrl-A X.
#
# Environment: BUILDROOT_SHA256 (overrides the pin, e.g. to record it the first time),
# BUILDROOT_URL, IMAGE_CACHE_DIR (default .cache), JOBS (make -j, default: nproc),
# QEMU_WG_PORT, QEMU_HTTPS_PORT, QEMU_MEM.
set -euo pipefail

# Buildroot release whose Rust is 1.96.1. The sha256 is that of the release tarball as
# published with its signed checksum file (buildroot-VERSION.tar.xz.sign, signed by the
# Buildroot release manager). It is empty until someone with internet records it: run
# `make image`, which downloads the tarball and the .sign file, prints both hashes and
# stops; check the signature (gpg --verify), then set the value here.
BUILDROOT_VERSION=2026.05.1
BUILDROOT_SHA256_PINNED=""

root_dir="$(cd "$(dirname "$0")/.." && pwd)"
cache="${IMAGE_CACHE_DIR:-$root_dir/.cache}"
external="$root_dir/buildroot"
boards=(rpi4_64 qemu_aarch64)

say() { printf 'image: %s\n' "$*"; }
die() {
    printf 'image: error: %s\n' "$*" >&2
    exit 1
}

# Buildroot's own defconfig each board starts from: the kernel pin (hash-checked by the
# release's board/*/patches), firmware and headers the release validated.
base_defconfig() {
    case "$1" in
        rpi4_64) echo raspberrypi4_64_defconfig ;;
        qemu_aarch64) echo qemu_aarch64_virt_defconfig ;;
        *) die "unknown board '$1' (expected one of: ${boards[*]})" ;;
    esac
}

# --- 1. Buildroot itself ----------------------------------------------------------------
fetch_buildroot() {
    local name="buildroot-$BUILDROOT_VERSION"
    local url="${BUILDROOT_URL:-https://buildroot.org/downloads/$name.tar.xz}"
    local tarball="$cache/$name.tar.xz" tree="$cache/$name"
    local pin="${BUILDROOT_SHA256:-$BUILDROOT_SHA256_PINNED}"
    mkdir -p "$cache"

    # An extracted tree is trusted only if it was extracted from the pinned tarball.
    if [ -n "$pin" ] && [ -f "$tree/.gatehouse-sha256" ] &&
        [ "$(cat "$tree/.gatehouse-sha256")" = "$pin" ]; then
        BUILDROOT_DIR="$tree"
        return
    fi

    if [ ! -f "$tarball" ]; then
        command -v curl >/dev/null 2>&1 || die "curl is needed to fetch Buildroot"
        say "fetching $url"
        if ! curl -fL --retry 2 --connect-timeout 20 -o "$tarball.part" "$url"; then
            rm -f "$tarball.part"
            die "could not download Buildroot $BUILDROOT_VERSION from $url.
       The image is built on a machine with internet access (Buildroot and every package
       source are downloaded). Nothing was built. Offline, run \`make test-buildroot\`
       (and the other offline checks) instead."
        fi
        mv "$tarball.part" "$tarball"
    fi

    local actual
    actual="$(sha256sum "$tarball" | cut -d' ' -f1)"
    if [ -z "$pin" ]; then
        local sign_hash=""
        if curl -fsL --connect-timeout 20 -o "$tarball.sign" "$url.sign"; then
            sign_hash="$(sed -n 's/^SHA256: *\([0-9a-f]\{64\}\).*/\1/p' "$tarball.sign" | head -n 1)"
        fi
        die "no sha256 pinned for Buildroot $BUILDROOT_VERSION, refusing an unverified tree.
       downloaded:           $actual  $tarball
       signed checksum file: ${sign_hash:-(not available)}  ${sign_hash:+$tarball.sign}
       Check the .sign file's signature (gpg --verify $tarball.sign), then set
       BUILDROOT_SHA256_PINNED=$actual in scripts/image.sh (or export BUILDROOT_SHA256)."
    fi
    if [ "$actual" != "$pin" ]; then
        mv "$tarball" "$tarball.rejected"
        die "Buildroot tarball sha256 mismatch (moved to $tarball.rejected):
       expected $pin
       got      $actual"
    fi

    say "Buildroot $BUILDROOT_VERSION verified (sha256 $pin); extracting into ${tree#"$root_dir"/}"
    rm -rf "$tree" "$tree.part"
    mkdir -p "$tree.part"
    tar -xJf "$tarball" -C "$tree.part" --strip-components=1
    if [ ! -f "$tree.part/Makefile" ] || [ ! -d "$tree.part/package" ]; then
        die "$tarball does not contain a Buildroot tree"
    fi
    printf '%s\n' "$pin" >"$tree.part/.gatehouse-sha256"
    mv "$tree.part" "$tree"
    BUILDROOT_DIR="$tree"
}

# Lines of ours (BR2_X=value and "# BR2_X is not set") that must survive into .config.
check_config_survived() { # dotconfig fragment...
    local dotconfig="$1" f line sym dropped=()
    shift
    for f in "$@"; do
        while IFS= read -r line; do
            if [[ "$line" =~ ^(BR2_[A-Za-z0-9_]+|CONFIG_[A-Za-z0-9_]+)= ]]; then
                grep -qxF -- "$line" "$dotconfig" || dropped+=("${f#"$root_dir"/}: $line")
            elif [[ "$line" =~ ^#\ ((BR2|CONFIG)_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
                sym="${BASH_REMATCH[1]}"
                ! grep -q "^$sym=" "$dotconfig" || dropped+=("${f#"$root_dir"/}: $line")
            fi
        done <"$f"
    done
    if [ "${#dropped[@]}" -gt 0 ]; then
        printf 'image: error: kconfig did not keep these settings in %s (a dependency is not met,\n' "${dotconfig#"$root_dir"/}" >&2
        printf '       or the option was renamed in this version):\n' >&2
        printf '         %s\n' "${dropped[@]}" >&2
        exit 1
    fi
}

# The .config of a configured package (linux-6.12.x, linux-custom, uboot-2026.04, ...).
package_dotconfig() { # output-dir package
    local found
    found="$(find "$1/build" -mindepth 2 -maxdepth 2 -name .config -path "*/build/$2-*" \
        -not -path '*/linux-headers-*' -not -path '*/uboot-tools-*' | head -n 1)"
    [ -n "$found" ] || die "no $2 .config under ${1#"$root_dir"/}/build after $2-configure"
    printf '%s\n' "$found"
}

build() {
    local board="$1" base
    base="$(base_defconfig "$board")"
    local ours="$external/configs/gatehouse_${board}_defconfig"
    local common="$external/configs/gatehouse_common.fragment"
    [ -f "$ours" ] || die "$ours is missing"

    # Offline checks first: no point downloading for a tree that fails them.
    "$root_dir/scripts/check-br2-symbols.sh"

    fetch_buildroot
    local br="$BUILDROOT_DIR" out="$root_dir/output/$board"
    [ -f "$br/configs/$base" ] || die "Buildroot $BUILDROOT_VERSION has no configs/$base"

    "$root_dir/scripts/check-br2-symbols.sh" --buildroot "$br"
    if [ -x "$br/utils/check-package" ]; then
        say "utils/check-package on buildroot/package"
        (cd "$external" && "$br/utils/check-package" -b package/*/*) ||
            die "Buildroot's check-package found style problems in buildroot/package"
    fi

    mkdir -p "$out" "$cache/dl"
    export BR2_DL_DIR="$cache/dl"
    say "merging $base + ${common#"$root_dir"/} + ${ours#"$root_dir"/} into ${out#"$root_dir"/}/.config"
    (cd "$br" && CONFIG_=BR2_ support/kconfig/merge_config.sh -m -O "$out" \
        "configs/$base" "$common" "$ours")
    make -C "$br" O="$out" BR2_EXTERNAL="$external" olddefconfig >/dev/null
    check_config_survived "$out/.config" "$common" "$ours"

    local jobs="${JOBS:-$(nproc)}"
    say "configuring the kernel (builds the toolchain first)"
    make -C "$br" O="$out" BR2_EXTERNAL="$external" -j"$jobs" linux-configure
    check_config_survived "$(package_dotconfig "$out" linux)" "$external"/linux/*.fragment
    if [ -f "$external/uboot/$board.fragment" ]; then
        make -C "$br" O="$out" BR2_EXTERNAL="$external" -j"$jobs" uboot-configure
        check_config_survived "$(package_dotconfig "$out" uboot)" "$external/uboot/$board.fragment"
    fi

    say "building (this takes a while)"
    make -C "$br" O="$out" BR2_EXTERNAL="$external" -j"$jobs"
    say "done: ${out#"$root_dir"/}/images/"
    ls -l "$out/images/"*.img "$out/images/"*.raucb 2>/dev/null || true
}

# --- qemu -----------------------------------------------------------------------------
qemu() {
    local images="$root_dir/output/qemu_aarch64/images" disk=""
    command -v qemu-system-aarch64 >/dev/null 2>&1 ||
        die "qemu-system-aarch64 not found (Debian: apt-get install qemu-system-arm)"
    local f
    for f in disk.img sdcard.img; do
        if [ -f "$images/$f" ]; then
            disk="$images/$f"
            break
        fi
    done
    if [ -z "$disk" ] || [ ! -f "$images/u-boot.bin" ]; then
        die "no qemu image in ${images#"$root_dir"/} (u-boot.bin and disk.img): build it first with
       make image BOARD=qemu_aarch64    (needs internet; see buildroot/README.md)"
    fi
    local wg="${QEMU_WG_PORT:-51820}" https="${QEMU_HTTPS_PORT:-8443}"
    say "booting ${disk#"$root_dir"/}: host UDP $wg -> WireGuard 51820, host TCP $https -> console 8443 (quit: Ctrl-A X)"
    exec qemu-system-aarch64 \
        -M virt -cpu cortex-a53 -smp 2 -m "${QEMU_MEM:-1024}" -nographic \
        -bios "$images/u-boot.bin" \
        -drive file="$disk",if=none,format=raw,id=hd0 \
        -device virtio-blk-device,drive=hd0 \
        -netdev user,id=net0,hostfwd=udp::"$wg"-:51820,hostfwd=tcp::"$https"-:8443 \
        -device virtio-net-device,netdev=net0 \
        -device i6300esb
}

case "${1:-}" in
    build)
        [ -n "${2:-}" ] || die "usage: scripts/image.sh build BOARD (one of: ${boards[*]})"
        base_defconfig "$2" >/dev/null
        build "$2"
        ;;
    qemu) qemu ;;
    -h | --help | "")
        sed -n '2,28s/^# \{0,1\}//p' "$0"
        ;;
    *) die "unknown command '$1' (expected build or qemu)" ;;
esac
