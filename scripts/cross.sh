#!/usr/bin/env bash
# Cross-builds the gatehouse binary for the box's CPU (aarch64 Linux, Raspberry Pi 4 / CM4)
# with Debian's toolchain (rustc-web with its arm64 standard library from Debian's
# multiarch package libstd-rust-web-dev:arm64, gcc-aarch64-linux-gnu) and checks it
# under qemu-user. (TOOLCHAIN.md's recipe rebuilds std with -Zbuild-std; the packaged
# std gives the same binary without that, about 3 minutes sooner on a clean build.)
#
#   scripts/cross.sh          build target/cross/aarch64-unknown-linux-gnu/PROFILE/gatehouse,
#                             print its size and the build time
#   scripts/cross.sh test     run that binary under qemu-aarch64-static: --version, a config
#                             check of the image's default config, and a short self-test of
#                             `gatehouse up` (temp config, loopback ports, userspace tunnel):
#                             waits for /healthz, checks it, stops it with SIGTERM, checks
#                             the exit is clean and that it told systemd READY/STOPPING
#
# The cross build has its own target dir (target/cross) so it never disturbs the host
# build. The image config is board/common/rootfs-overlay/etc/gatehouse/gatehouse.toml when
# present, else config/gatehouse.toml.
set -euo pipefail

root_dir="$(cd "$(dirname "$0")/.." && pwd)"
triple=aarch64-unknown-linux-gnu
target_dir="$root_dir/target/cross"

die() {
    printf 'cross: error: %s\n' "$*" >&2
    exit 1
}
say() { printf 'cross: %s\n' "$*"; }

# The cargo profile: release (what `make cross` measures), or cross-test (Cargo.toml:
# release without LTO at opt-level 1, about 2 minutes sooner on a clean build; what
# `make test-cross`, part of `make test`, builds and runs). CROSS_PROFILE picks it.
profile="${CROSS_PROFILE:-release}"
case "$profile" in
    release | cross-test) ;;
    *) die "CROSS_PROFILE='$profile': expected release or cross-test" ;;
esac
bin="$target_dir/$triple/$profile/gatehouse"

build() {
    local tool
    for tool in /usr/bin/rustc /usr/bin/cargo aarch64-linux-gnu-gcc file; do
        command -v "$tool" >/dev/null 2>&1 ||
            die "$tool not found: run 'make deps' (installs rustc-web cargo-web rust-web-src gcc-aarch64-linux-gnu libc6-dev-arm64-cross file)"
    done
    [ -d /usr/aarch64-linux-gnu/lib ] || die "libc6-dev-arm64-cross is missing: run 'make deps'"
    compgen -G "/usr/lib/rustlib/$triple/lib/libstd-*.rlib" >/dev/null ||
        die "Rust's standard library for $triple is missing: run 'make deps' (installs libstd-rust-web-dev:arm64)"
    local start end
    start=$(date +%s)
    # rustup's rustc shadows Debian's: name Debian's explicitly (TOOLCHAIN.md).
    (cd "$root_dir" &&
        RUSTC=/usr/bin/rustc \
            CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
            CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
            AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar \
            CARGO_TARGET_DIR="$target_dir" \
            nice -n 19 /usr/bin/cargo build --profile "$profile" --locked \
            --target "$triple" -p gatehouse)
    end=$(date +%s)
    [ -x "$bin" ] || die "the build did not produce $bin"
    file -b "$bin" | grep -q 'ARM aarch64' || die "$bin is not an aarch64 executable: $(file -b "$bin")"
    say "built ${bin#"$root_dir"/} in $((end - start)) s"
    # The image strips its binaries; the stripped size is what lands in flash.
    local stripped
    stripped="$(mktemp)"
    aarch64-linux-gnu-strip -o "$stripped" "$bin"
    say "size: $(stat -c %s "$bin") bytes as built, $(stat -c %s "$stripped") bytes ($(($(stat -c %s "$stripped") / 1024)) KiB) stripped, $profile profile"
    rm -f "$stripped"
}

# The binary runs on Debian's arm64 libraries (libc6:arm64 and libgcc-s1:arm64, which
# libstd-rust-web-dev:arm64 brings) at their multiarch paths, with no -L sysroot: with
# -L /usr/aarch64-linux-gnu, qemu loads the cross libc from there but falls back to
# /lib/aarch64-linux-gnu for what the cross sysroot lacks, and that mix of two glibc
# builds spins forever inside the dynamic loader.
qemu() {
    qemu-aarch64-static "$bin" "$@"
}

# --- scripts/cross.sh test ----------------------------------------------------------
tmp=""
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    [ -z "$tmp" ] || rm -rf "$tmp"
}

# Waits up to $1 seconds for the command after $2 to succeed; fails at once if process
# $2 is gone.
wait_until() {
    local secs="$1" pid="$2"
    shift 2
    local end=$((SECONDS + secs))
    until "$@"; do
        kill -0 "$pid" 2>/dev/null || return 1
        [ "$SECONDS" -lt "$end" ] || return 1
        sleep 0.2
    done
}

healthz() { [ "$(curl -fsS --max-time 2 "http://127.0.0.1:$1/healthz" 2>/dev/null)" = ok ]; }
# notified LINE N: the notify log holds LINE at least N times.
notified() { [ "$(grep -cxF -- "$1" "$tmp/notify.log" 2>/dev/null)" -ge "$2" ]; }

check() {
    local tool
    for tool in qemu-aarch64-static curl python3 file; do
        command -v "$tool" >/dev/null 2>&1 ||
            die "$tool not found: run 'make deps' (installs qemu-user-static, curl, python3, file)"
    done
    [ -x "$bin" ] || die "${bin#"$root_dir"/} is missing: run 'make cross' first"
    [ -e /lib/ld-linux-aarch64.so.1 ] ||
        die "Debian's arm64 C library is missing (libc6:arm64): run 'make deps'"
    file -b "$bin" | grep -q 'ARM aarch64' || die "$bin is not an aarch64 executable: $(file -b "$bin")"
    trap cleanup EXIT
    tmp="$(mktemp -d)"

    # 1. --version: the workspace's version.
    local want got
    want="gatehouse $(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$root_dir/Cargo.toml")"
    got="$(qemu --version)"
    [ "$got" = "$want" ] || die "--version printed '$got', expected '$want'"
    say "ok: --version -> $got"

    # 2. The image's default config, checked as the services load it; and a bad one refused.
    local image_config="$root_dir/board/common/rootfs-overlay/etc/gatehouse/gatehouse.toml"
    [ -f "$image_config" ] || image_config="$root_dir/config/gatehouse.toml"
    local out
    out="$(qemu --config "$image_config" check-config)" ||
        die "check-config rejected ${image_config#"$root_dir"/}"
    grep -q ': ok$' <<<"$out" || die "check-config printed no verdict: $out"
    say "ok: check-config ${image_config#"$root_dir"/}"
    local line
    while IFS= read -r line; do say "  $line"; done <<<"$out"
    printf '[tunnel]\nmtu = 100\n' >"$tmp/bad.toml"
    if qemu --config "$tmp/bad.toml" check-config >/dev/null 2>"$tmp/bad.err"; then
        die "check-config accepted tunnel.mtu = 100"
    fi
    grep -q 'tunnel.mtu' "$tmp/bad.err" || die "check-config's error does not name tunnel.mtu: $(cat "$tmp/bad.err")"
    say "ok: check-config refuses tunnel.mtu = 100"

    # 3. `gatehouse up`: userspace tunnel, hub and its mosquitto (a host binary) on
    #    loopback ports, LoRa off, with a notify socket and a 2 s watchdog as systemd runs it.
    local http udp
    read -r http udp < <(python3 -c '
import socket
t = socket.socket(); t.bind(("127.0.0.1", 0))
u = socket.socket(type=socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
print(t.getsockname()[1], u.getsockname()[1])')
    mkdir -p "$tmp/data"
    printf '%s\n' \
        '[general]' "data_dir = \"$tmp/data\"" \
        '[tunnel]' 'mode = "userspace"' 'interface = "gh-cross"' "listen_port = $udp" \
        'address = "10.77.0.1/24"' "public_endpoint = \"127.0.0.1:$udp\"" \
        "uapi_dir = \"$tmp/wireguard\"" 'firewall = "none"' \
        '[hub]' "http_listen = \"127.0.0.1:$http\"" 'https_listen = ""' 'gate_tcp_listen = ""' \
        '[hub.mqtt]' 'mode = "embedded"' 'listen = "127.0.0.1:0"' \
        '[lora]' 'mode = "off"' >"$tmp/gatehouse.toml"
    # The notify socket: one line per datagram (newlines inside become '|').
    python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "w", buffering=1) as out:
    while True:
        m = s.recv(4096).decode(errors="replace").replace("\n", "|")
        print(m, file=out)
        if m == "STOPPING=1":
            break' "$tmp/notify.sock" "$tmp/notify.log" &
    local listener=$!
    pids+=("$listener")
    wait_until 10 "$listener" test -S "$tmp/notify.sock" || die "the notify listener did not start"

    local start=$SECONDS
    NOTIFY_SOCKET="$tmp/notify.sock" WATCHDOG_USEC=2000000 \
        qemu-aarch64-static "$bin" --config "$tmp/gatehouse.toml" up \
        >"$tmp/up.log" 2>&1 &
    local gh=$!
    pids+=("$gh")
    wait_until 120 "$gh" healthz "$http" ||
        die "gatehouse up: no /healthz on 127.0.0.1:$http within 120 s; its log:
$(cat "$tmp/up.log")"
    say "ok: gatehouse up (pid $gh) serves /healthz -> ok after $((SECONDS - start)) s"
    grep -q 'MQTT broker ready' "$tmp/up.log" ||
        die "the hub's mosquitto did not start; log:
$(cat "$tmp/up.log")"
    # Ready once the tunnel (UAPI get) and the hub (/healthz) proved themselves; then a
    # ping per proof, each every second.
    wait_until 20 "$gh" notified 'READY=1|STATUS=serving' 1 ||
        die "no READY=1 on the notify socket: $(cat "$tmp/notify.log")"
    wait_until 20 "$gh" notified 'WATCHDOG=1' 3 ||
        die "fewer than 3 WATCHDOG=1 on the notify socket: $(cat "$tmp/notify.log")"
    say "ok: READY=1, then $(grep -cx 'WATCHDOG=1' "$tmp/notify.log") WATCHDOG=1 so far"

    kill -TERM "$gh"
    local end=$((SECONDS + 30))
    while kill -0 "$gh" 2>/dev/null && [ "$SECONDS" -lt "$end" ]; do sleep 0.2; done
    kill -0 "$gh" 2>/dev/null && die "gatehouse up still runs 30 s after SIGTERM"
    local rc=0
    wait "$gh" || rc=$?
    [ "$rc" -eq 0 ] || die "gatehouse up exited $rc after SIGTERM; log:
$(cat "$tmp/up.log")"
    if grep -q 'panicked' "$tmp/up.log"; then
        die "gatehouse up panicked; log:
$(cat "$tmp/up.log")"
    fi
    wait_until 5 "$listener" notified 'STOPPING=1' 1 || notified 'STOPPING=1' 1 ||
        die "no STOPPING=1 on the notify socket: $(cat "$tmp/notify.log")"
    [ "$(grep -c . "$tmp/notify.log")" -eq "$(grep -cxE 'READY=1\|STATUS=serving|WATCHDOG=1|STOPPING=1' "$tmp/notify.log")" ] ||
        die "unexpected notifications: $(cat "$tmp/notify.log")"
    # The hub's mosquitto went with it.
    if pgrep -f "$tmp/data" >/dev/null; then
        die "a process of the hub outlived gatehouse up: $(pgrep -af "$tmp/data")"
    fi
    say "ok: SIGTERM -> STOPPING=1, exit 0, nothing left running"
}

mode="${1:-build}"
case "$mode" in
    build) build ;;
    test) check ;;
    -h | --help)
        sed -n '2,16s/^# \{0,1\}//p' "$0"
        exit 0
        ;;
    *) die "unknown mode '$mode' (expected nothing or 'test')" ;;
esac
