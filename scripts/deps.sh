#!/usr/bin/env bash
# Installs what Gatehouse's workflows need and is missing; does nothing (quickly) when
# everything is present. Called by `make deps`, `make run`, `make test`.
#
#   scripts/deps.sh          Debian packages for the tests + cargo-nextest + the console
#                            test's playwright-core (npm ci into its node_modules)
#   scripts/deps.sh bench    the same, plus boringtun-cli (crates.io) into target/tools,
#                            the comparison peer of `make bench-tunnel`
#
# Debian packages are installed with --no-install-recommends (wireguard-tools would
# otherwise pull a kernel image). `apt-get update` runs only when something must be
# installed. One line is printed per thing installed. Node.js may come from elsewhere
# (nodesource's nodejs carries its own npm and conflicts with Debian's npm): Debian's
# nodejs and npm are installed only when `node` (or `npm`) is missing.
set -euo pipefail

mode="${1:-base}"
case "$mode" in
    base | bench) ;;
    -h | --help)
        sed -n '2,12s/^# \{0,1\}//p' "$0"
        exit 0
        ;;
    *)
        echo "deps.sh: unknown mode '$mode' (expected nothing or 'bench')" >&2
        exit 2
        ;;
esac

root_dir="$(cd "$(dirname "$0")/.." && pwd)"
CARGO="${CARGO:-cargo}"

# Debian packages: the interop peers (wireguard-go, wg), traffic and MQTT tools, the
# namespace and firewall tools of the end-to-end tests, and a C toolchain for crates
# that compile C and for linking (rustup's toolchain uses the system linker `cc`), and the
# headless browser of the console's end-to-end test (driven by playwright-core from npm).
debian_packages=(
    wireguard-go
    wireguard-tools
    iperf3
    mosquitto
    mosquitto-clients
    nftables
    iproute2
    iputils-ping
    curl
    python3
    procps
    gcc
    libc6-dev
    chromium
    rustc-web
    cargo-web
    rust-web-src
    lld-19
    binutils-arm-none-eabi
    qemu-system-arm
    # `make cross` / `make test-cross`: the gateway's aarch64 build and qemu-user.
    gcc-aarch64-linux-gnu
    libc6-dev-arm64-cross
    qemu-user-static
    file
    # (and the arm64 build of Rust's std, libstd-rust-web-dev:arm64: foreign_packages)
    # `make test-board`: the offline checks of board/ (scripts/check-image-files.sh).
    genimage
    mtools
    dosfstools
    fdisk
    e2fsprogs
    rauc
    squashfs-tools
    u-boot-tools
    shellcheck
    openssl
    systemd
)
# Packages of another architecture (Debian multiarch): the standard library for the
# gateway's CPU, so `make cross` needs no -Zbuild-std (which rebuilt std on every clean
# build). Its version follows rustc-web's, which apt keeps in step.
foreign_arch=arm64
foreign_packages=(libstd-rust-web-dev:arm64)
if ! command -v node >/dev/null 2>&1; then
    debian_packages+=(nodejs npm)
elif ! command -v npm >/dev/null 2>&1; then
    debian_packages+=(npm)
fi

say() { printf 'deps: %s\n' "$*"; }
die() {
    printf 'deps: error: %s\n' "$*" >&2
    exit 1
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run: $* (run as root or install sudo)"
    fi
}

# --- Debian packages --------------------------------------------------------------
missing_packages() {
    # One dpkg-query call for all packages (fast); a package dpkg has never heard of
    # is absent from the output, hence the comparison against the full list.
    local installed
    installed="$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${debian_packages[@]}" 2>/dev/null |
        awk '$2 == "installed" { print $1 }')" || true
    local p
    for p in "${debian_packages[@]}"; do
        if ! grep -qx -- "$p" <<<"$installed"; then
            printf '%s\n' "$p"
        fi
    done
    # Foreign packages are named with their architecture, which ${Package} leaves out.
    for p in "${foreign_packages[@]}"; do
        [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] ||
            printf '%s\n' "$p"
    done
}

install_debian_packages() {
    if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
        # Not Debian: check the commands only and say what is missing.
        local c absent=()
        for c in wireguard-go wg iperf3 mosquitto mosquitto_sub nft ip ping ps cc chromium node npm; do
            command -v "$c" >/dev/null 2>&1 || absent+=("$c")
        done
        [ "${#absent[@]}" -eq 0 ] || die "not a Debian system; please install: ${absent[*]}"
        return 0
    fi
    local missing
    mapfile -t missing < <(missing_packages)
    [ "${#missing[@]}" -gt 0 ] || return 0
    if ! dpkg --print-foreign-architectures | grep -qx "$foreign_arch"; then
        say "dpkg --add-architecture $foreign_arch (for ${foreign_packages[*]})"
        as_root dpkg --add-architecture "$foreign_arch"
    fi
    say "apt-get update (to install: ${missing[*]})"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    local p
    for p in "${missing[@]}"; do
        say "installing Debian package $p"
    done
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# --- Rust toolchain pieces ----------------------------------------------------------
check_rust() {
    command -v "$CARGO" >/dev/null 2>&1 ||
        die "cargo not found: install Rust with rustup (https://rustup.rs), then re-run"
    local comp
    for comp in rustfmt clippy; do
        if ! "$CARGO" "${comp/rustfmt/fmt}" --version >/dev/null 2>&1; then
            command -v rustup >/dev/null 2>&1 || die "cargo $comp is missing and rustup is not available"
            say "installing rustup component $comp"
            rustup component add "$comp" >/dev/null
        fi
    done
    if ! command -v cargo-nextest >/dev/null 2>&1; then
        say "installing cargo-nextest (cargo install --locked, takes a few minutes)"
        "$CARGO" install --locked --quiet cargo-nextest
    fi
}

# --- the console test's node modules ------------------------------------------------
# playwright-core, pinned in package.json and package-lock.json. npm writes its hidden
# lockfile into node_modules on every install: present and not older than the lockfile
# means the installed tree is the locked one.
console_tests="$root_dir/appliance/gatehouse/tests/console"
install_console_test_modules() {
    local installed="$console_tests/node_modules/.package-lock.json"
    if [ -f "$installed" ] && [ ! "$console_tests/package-lock.json" -nt "$installed" ]; then
        return 0
    fi
    command -v npm >/dev/null 2>&1 || die "npm not found: install Node.js (20 or later) with npm"
    say "npm ci in ${console_tests#"$root_dir"/} (playwright-core for the console's browser test)"
    (cd "$console_tests" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
}

# --- benchmark peers ------------------------------------------------------------------
# boringtun-cli goes into a project-local root so that it does not land on the machine's
# PATH; scripts/bench-tunnel.sh looks for it there. (`make clean` removes it with target/.)
tools_root="$root_dir/target/tools"
install_bench_tools() {
    if [ ! -x "$tools_root/bin/boringtun-cli" ]; then
        say "installing boringtun-cli into ${tools_root#"$root_dir"/} (cargo install --locked, takes a few minutes)"
        "$CARGO" install --locked --quiet --root "$tools_root" boringtun-cli
    fi
}

install_debian_packages
check_rust
install_console_test_modules
if [ "$mode" = bench ]; then
    install_bench_tools
fi
