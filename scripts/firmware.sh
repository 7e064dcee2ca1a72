#!/usr/bin/env bash
# Cross-builds the sensor-node firmware with Debian's rustc-web (-Zbuild-std, see
# /work/shared/TOOLCHAIN.md) and checks what the boards must fit in.
#
#   scripts/firmware.sh              build both boards (lora-node/boards/nrf52840, stm32wl),
#                                    print flash/RAM from arm-none-eabi-size, fail if a
#                                    board does not build or exceeds 64 KiB flash / 16 KiB RAM
#   scripts/firmware.sh qemu-tests   build lora-node/qemu-tests and run the core's scenarios
#                                    on a Cortex-M4 under qemu-system-arm (exit code = result)
#
# Flash = .text + .data (what is programmed), RAM = .data + .bss (static RAM; the stack is
# the rest of the chip's RAM and is not counted). LORA_NODE_PROVISIONING=<file> builds the
# boards with a real node identity (the TOML `gatehouse sensor add` prints).
set -euo pipefail

root_dir="$(cd "$(dirname "$0")/.." && pwd)"
FLASH_LIMIT=$((64 * 1024))
RAM_LIMIT=$((16 * 1024))

die() {
    printf 'firmware: error: %s\n' "$*" >&2
    exit 1
}

for tool in /usr/bin/rustc /usr/bin/cargo ld.lld-19 arm-none-eabi-size qemu-system-arm; do
    command -v "$tool" >/dev/null 2>&1 ||
        die "$tool not found: run 'make deps' (installs rustc-web cargo-web rust-web-src lld-19 binutils-arm-none-eabi qemu-system-arm)"
done

# rustup's rustc shadows Debian's: name Debian's explicitly (TOOLCHAIN.md).
web_cargo() {
    RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 /usr/bin/cargo "$@"
}

mode="${1:-boards}"
case "$mode" in
    qemu-tests)
        cd "$root_dir/lora-node/qemu-tests"
        web_cargo build --release --locked
        # The image's exit code (semihosting) is QEMU's; a hang is a failure too.
        timeout 120 qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -nographic \
            -semihosting-config enable=on,target=native \
            -kernel target/thumbv7em-none-eabihf/release/lora-node-qemu-tests
        exit $?
        ;;
    boards) ;;
    -h | --help)
        sed -n '2,14s/^# \{0,1\}//p' "$0"
        exit 0
        ;;
    *) die "unknown mode '$mode' (expected nothing or 'qemu-tests')" ;;
esac

failed=()
printf '%-10s %-22s %10s %10s\n' board target "flash (B)" "RAM (B)"
for board in nrf52840 stm32wl; do
    dir="$root_dir/lora-node/boards/$board"
    target="$(sed -n 's/^target = "\(.*\)"/\1/p' "$dir/.cargo/config.toml")"
    log="$(mktemp)"
    if ! (cd "$dir" && web_cargo build --release --locked) >"$log" 2>&1; then
        grep -E '^(error|warning: unused)' -A12 "$log" | head -60 >&2 || true
        printf 'firmware: %s FAILED to build (full log above was cut; rebuild in %s)\n' "$board" "${dir#"$root_dir"/}" >&2
        failed+=("$board (build)")
        rm -f "$log"
        continue
    fi
    rm -f "$log"
    elf="$dir/target/$target/release/lora-node-$board"
    read -r text data bss _ < <(arm-none-eabi-size "$elf" | tail -1)
    flash=$((text + data))
    ram=$((data + bss))
    printf '%-10s %-22s %10d %10d\n' "$board" "$target" "$flash" "$ram"
    if [ "$flash" -gt "$FLASH_LIMIT" ]; then
        failed+=("$board (flash $flash > $FLASH_LIMIT)")
    fi
    if [ "$ram" -gt "$RAM_LIMIT" ]; then
        failed+=("$board (RAM $ram > $RAM_LIMIT)")
    fi
done
if [ "${#failed[@]}" -gt 0 ]; then
    die "${failed[*]}"
fi
printf 'firmware: both boards built within %d KiB flash / %d KiB RAM\n' $((FLASH_LIMIT / 1024)) $((RAM_LIMIT / 1024))
