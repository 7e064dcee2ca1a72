#!/usr/bin/env bash
# check-image-files.sh: the offline checks of what board/ puts into the SD image (make
# test-board). Each check prints one line, "ok   NAME: what was shown" or
# "FAIL NAME: why" (with the tool's output below it); the exit status is 1 if any failed.
#
#   scripts      every shell script under board/ and scripts/ through shellcheck
#   units        post-build.sh assembles a root (the overlay, enabled units, os-release,
#                RAUC keyring) in a temp dir; `systemd-analyze verify --root` checks our
#                units there (Debian's standard units beside them, stubs for the commands
#                they run); any message is a failure
#   users        sysusers.d and tmpfiles.d applied to a temp root (systemd-sysusers,
#                systemd-tmpfiles --root); every User=/Group= of our units exists; then,
#                as those users (setpriv): the hub replaces the tunnel's peer list, the
#                tunnel reads it and the hub's tunnel-events.key, the forwarder appends
#                its log; the hub cannot read the tunnel's key, the tunnel cannot read the
#                hub's database or create files in its directory, the forwarder can read
#                none of it
#   os-release   that root's os-release carries config's version (board/common/version.sh)
#   nftables     `nft -c -f` on the base ruleset, and again together with a ruleset of
#                the tunnel's shape (table inet gatehouse), as the box loads both (root)
#   mosquitto    our mosquitto.conf with ports and paths moved into a temp dir, the files
#                made by mqtt-sync from a fake data dir (throwaway TLS certificate,
#                mosquitto_passwd accounts, an ACL in the hub's format): both listeners
#                carry a message (loopback plain, TLS with the certificate), an anonymous
#                client and a gate outside its ACL are refused
#   image-BOARD  post-image.sh on dummy inputs (dummy firmware, a small rootfs.ext4):
#                genimage with board/BOARD/genimage.cfg, then the partition table (4
#                partitions), the data partition's label, boot.scr on the boot partition
#   rauc-BOARD   the bundle post-image.sh signed with a throwaway key: `rauc info
#                --keyring` with that key's certificate accepts it (compatible, version),
#                another certificate is refused; board/BOARD/rauc-system.conf parses
#   config       the image's gatehouse.toml loaded by the gatehouse binary
#                (GATEHOUSE_BIN, else target/debug or target/release) with data_dir moved
#                into a temp dir: `gatehouse console` accepts it
#   first-boot   that binary's tunnel started once with the image's config (userspace
#                mode, loopback): its key file is 0600, the peer list holds no private
#                key and publishes the key file's public key (`wg pubkey`); then the
#                first-boot script against that fake root: partition commands in dry-run,
#                the real token and certificate; checks the boot partition's text file
#
# Temp dirs are removed and every process started is stopped by PID on exit.
set -uo pipefail

root_dir="$(cd "$(dirname "$0")/.." && pwd)"
board="$root_dir/board"
overlay="$board/common/rootfs-overlay"
boards=(rpi4_64 qemu_aarch64)

tmp="$(mktemp -d "${TMPDIR:-/tmp}/gatehouse-board-check.XXXXXX")"
chmod 0755 "$tmp" # mosquitto (its own user) reads the files under it
pids=()
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
    done
    rm -rf "$tmp"
}
trap cleanup EXIT

failed=0
ok() { printf 'ok   %s: %s\n' "$1" "$2"; }
fail() {
    printf 'FAIL %s: %s\n' "$1" "$2"
    if [ -n "${3:-}" ] && [ -s "$3" ]; then
        sed 's/^/     | /' "$3" | head -n 40
    fi
    failed=1
}
need() { # need CHECK CMD...: fails CHECK unless every command exists
    local c="$1" cmd
    shift
    for cmd in "$@"; do
        if ! command -v "$cmd" >/dev/null 2>&1; then
            fail "$c" "$cmd not found (scripts/deps.sh installs it)"
            return 1
        fi
    done
}
# free_port: a TCP port nothing listens on now (the kernel's pick).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

version="$("$board/common/version.sh" "$root_dir")" || {
    echo "FAIL version: board/common/version.sh"
    exit 1
}
# The throwaway RAUC signing key of this run (never the development key in .cache/).
rauc_keys="$tmp/rauc-keys"
"$board/common/rauc-dev-keys.sh" "$rauc_keys" >/dev/null 2>&1
export RAUC_KEY="$rauc_keys/key.pem" RAUC_CERT="$rauc_keys/cert.pem"

# --- shellcheck --------------------------------------------------------------------------
check_shellcheck() {
    need shellcheck shellcheck || return
    local scripts=() f out="$tmp/shellcheck.out"
    while IFS= read -r -d '' f; do
        if head -n 1 "$f" | grep -Eq '^#!.*(/|env )(ba|da)?sh'; then
            scripts+=("$f")
        fi
    done < <(find "$board" "$root_dir/scripts" -type f -print0)
    if [ "${#scripts[@]}" -eq 0 ]; then
        fail shellcheck "no scripts found"
    elif shellcheck -x "${scripts[@]}" >"$out" 2>&1; then
        ok shellcheck "${#scripts[@]} scripts clean"
    else
        fail shellcheck "findings" "$out"
    fi
}

# --- units (and post-build.sh, os-release) -----------------------------------------------------
check_units() {
    need units systemd-analyze || return
    local r="$tmp/root" out="$tmp/units.out" b units=() u
    mkdir -p "$r/usr/lib/systemd" "$r/usr/bin" "$r/usr/sbin" "$r/etc"
    ln -s usr/bin "$r/bin"
    ln -s usr/sbin "$r/sbin"
    cp -a "$overlay/." "$r/"
    # systemd's own units, as the image's systemd package installs them.
    cp -a /usr/lib/systemd/system "$r/usr/lib/systemd/"
    # The commands our units run, as the image's packages install them.
    for b in usr/bin/gatehouse usr/sbin/nft usr/sbin/mosquitto usr/bin/rauc usr/bin/install \
        usr/bin/kill; do
        printf '#!/bin/sh\nexit 0\n' >"$r/$b"
        chmod 0755 "$r/$b"
    done
    if ! "$board/common/post-build.sh" "$r" rpi4_64 >"$out" 2>&1; then
        fail units "post-build.sh failed" "$out"
        return
    fi
    # Every enabled unit must be one of ours (a dangling symlink is a typo).
    while IFS= read -r -d '' u; do
        if [ ! -e "$u" ]; then
            fail units "enabled unit $(basename "$u") does not exist"
            return
        fi
    done < <(find "$r/etc/systemd/system" -path '*.wants/*' -print0)
    for u in "$r"/etc/systemd/system/*.service "$r"/etc/systemd/system/*.mount \
        "$r"/etc/systemd/system/*.path; do
        units+=("$u")
    done
    if SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --root="$r" "${units[@]}" >"$out" 2>&1 &&
        [ ! -s "$out" ]; then
        ok units "systemd-analyze verify: ${#units[@]} units clean"
    else
        fail units "systemd-analyze verify" "$out"
    fi
    # os-release from post-build.sh
    local vid
    vid="$(sed -n 's/^VERSION_ID=//p' "$r/usr/lib/os-release")"
    if [ "$vid" = "$version" ] && [ -s "$r/etc/rauc/keyring.pem" ] &&
        cmp -s "$r/etc/rauc/keyring.pem" "$RAUC_CERT" &&
        grep -q '^compatible=gatehouse-rpi4_64$' "$r/etc/rauc/system.conf"; then
        ok os-release "VERSION_ID=$vid, RAUC keyring and system.conf installed"
    else
        fail os-release "VERSION_ID='$vid' (want $version), or keyring/system.conf missing"
    fi
}

# --- users: sysusers + tmpfiles, and who may touch what ------------------------------------
# as UID GID CMD...: runs CMD as that uid/gid with no supplementary groups (the fake
# root's users are not the machine's, so by number).
as() {
    local uid="$1" gid="$2"
    shift 2
    setpriv --reuid="$uid" --regid="$gid" --clear-groups -- "$@"
}
# id_of FILE NAME: the id field (3rd) of NAME in a passwd or group file.
id_of() { awk -F: -v n="$2" '$1 == n { print $3 }' "$1"; }
check_users() {
    need users systemd-sysusers systemd-tmpfiles setpriv || return
    local r="$tmp/users-root" out="$tmp/users.out" u unit name
    mkdir -p "$r/etc" "$r/usr/lib" "$r/data"
    cp -a "$overlay/usr/lib/sysusers.d" "$overlay/usr/lib/tmpfiles.d" "$r/usr/lib/"
    if ! systemd-sysusers --root="$r" >"$out" 2>&1; then
        fail users "systemd-sysusers refused sysusers.d/gatehouse.conf" "$out"
        return
    fi
    if ! systemd-tmpfiles --root="$r" --create >"$out" 2>&1 || [ -s "$out" ]; then
        fail users "systemd-tmpfiles --create reported" "$out"
        return
    fi
    # Every User=/Group= of our units exists (a typo would stop the unit at boot).
    for unit in "$overlay"/etc/systemd/system/*.service; do
        while IFS='=' read -r u name; do
            if [ "$u" = User ] && [ -z "$(id_of "$r/etc/passwd" "$name")" ]; then
                fail users "$(basename "$unit"): User=$name is not made by sysusers.d"
                return
            elif [ "$u" = Group ] && [ -z "$(id_of "$r/etc/group" "$name")" ]; then
                fail users "$(basename "$unit"): Group=$name is not made by sysusers.d"
                return
            fi
        done < <(grep -E '^(User|Group)=' "$unit")
    done
    local hub tunnel lora shared lora_gid d="$r/data/gatehouse"
    hub="$(id_of "$r/etc/passwd" gatehouse-hub)"
    tunnel="$(id_of "$r/etc/passwd" gatehouse-tunnel)"
    lora="$(id_of "$r/etc/passwd" gatehouse-lora)"
    shared="$(id_of "$r/etc/group" gatehouse)"
    lora_gid="$(id_of "$r/etc/group" gatehouse-lora)"
    if [ -z "$hub" ] || [ -z "$tunnel" ] || [ -z "$lora" ] || [ "$hub" = "$tunnel" ]; then
        fail users "want distinct users gatehouse-hub and gatehouse-tunnel, and gatehouse-lora" "$r/etc/passwd"
        return
    fi
    # The files as the services leave them: the tunnel's key (0600) and the peer list
    # (0660) in its directory; the hub's database (0600) and event key (0640) in its own.
    if ! as "$tunnel" "$shared" sh -c "umask 077 && echo key >'$d/tunnel/wg0.key' &&
        echo peers >'$d/tunnel/wg0.conf' && chmod 0660 '$d/tunnel/wg0.conf'" ||
        ! as "$hub" "$shared" sh -c "umask 077 && echo db >'$d/gatehouse.db' &&
            echo k >'$d/tunnel-events.key' && chmod 0640 '$d/tunnel-events.key'"; then
        fail users "the services cannot create their files in ${d#"$r"}"
        return
    fi
    local bad=""
    # What must work ...
    as "$hub" "$shared" sh -c "echo new >'$d/tunnel/wg0.conf.tmp' && chmod 0660 '$d/tunnel/wg0.conf.tmp' &&
        mv '$d/tunnel/wg0.conf.tmp' '$d/tunnel/wg0.conf'" 2>/dev/null ||
        bad+="the hub cannot replace the peer list; "
    as "$tunnel" "$shared" cat "$d/tunnel/wg0.conf" >/dev/null 2>&1 ||
        bad+="the tunnel cannot read the peer list the hub wrote; "
    as "$tunnel" "$shared" cat "$d/tunnel-events.key" >/dev/null 2>&1 ||
        bad+="the tunnel cannot read tunnel-events.key; "
    as "$lora" "$lora_gid" sh -c "echo tx >>'$d/lora-tx.log'" 2>/dev/null ||
        bad+="the forwarder cannot append its transmit log; "
    # ... and what must not.
    as "$hub" "$shared" cat "$d/tunnel/wg0.key" >/dev/null 2>&1 &&
        bad+="the hub can read the tunnel's private key; "
    as "$tunnel" "$shared" cat "$d/gatehouse.db" >/dev/null 2>&1 &&
        bad+="the tunnel can read the hub's database; "
    as "$tunnel" "$shared" sh -c "echo x >'$d/planted'" 2>/dev/null &&
        bad+="the tunnel can create files in the hub's directory; "
    as "$lora" "$lora_gid" ls "$d" >/dev/null 2>&1 &&
        bad+="the forwarder can list the hub's directory; "
    as "$lora" "$lora_gid" cat "$d/tunnel-events.key" >/dev/null 2>&1 &&
        bad+="the forwarder can read tunnel-events.key; "
    as "$lora" "$lora_gid" cat "$d/tunnel/wg0.conf" >/dev/null 2>&1 &&
        bad+="the forwarder can read the peer list; "
    if [ -n "$bad" ]; then
        fail users "${bad%; }"
    else
        ok users "sysusers + tmpfiles: hub, tunnel, forwarder apart; only the peer list, the UAPI socket dir and tunnel-events.key shared"
    fi
}

# --- nftables --------------------------------------------------------------------------------
check_nftables() {
    need nftables nft || return
    local out="$tmp/nft.out" tunnel="$tmp/tunnel.nft"
    if [ "$(id -u)" -ne 0 ]; then
        fail nftables "nft -c needs root (CAP_NET_ADMIN)"
        return
    fi
    # The shape of the tunnel's own table (appliance/tunnel/src/firewall.rs), loaded
    # after ours: both must parse together (names, hooks, priorities).
    cat >"$tunnel" <<'NFT'
table inet gatehouse {}
delete table inet gatehouse
table inet gatehouse {
  set admin4 { type ipv4_addr; flags interval; elements = { 10.77.0.2/32 } }
  counter denied {}
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "wg0" ip daddr 10.77.0.1 tcp dport 443 dnat ip to 10.77.0.1:8443
  }
  chain input {
    type filter hook input priority filter; policy accept;
    iifname != "wg0" accept
    ct state established,related accept
    iifname "wg0" ip saddr @admin4 meta l4proto tcp ct status dnat ct original proto-dst { 443 } accept
    counter name denied drop
  }
}
NFT
    if ! nft -c -f "$overlay/etc/nftables.conf" >"$out" 2>&1; then
        fail nftables "nft -c -f etc/nftables.conf" "$out"
    elif ! cat "$overlay/etc/nftables.conf" "$tunnel" | nft -c -f - >"$out" 2>&1; then
        fail nftables "base ruleset together with the tunnel's table" "$out"
    else
        ok nftables "nft -c: base ruleset, and with the tunnel's table"
    fi
}

# --- mosquitto ---------------------------------------------------------------------------------
check_mosquitto() {
    need mosquitto mosquitto mosquitto_pub mosquitto_sub mosquitto_passwd openssl python3 || return
    local m="$tmp/mosquitto" out="$tmp/mosquitto.out" plain tls owner=""
    local data="$m/data" run="$m/run"
    mkdir -p "$data/mqtt" "$data/tls" "$m/db"
    # The box's certificate: in the image the console's (ECDSA P-256), here a throwaway one.
    if ! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$data/tls/console.key" -out "$data/tls/console.crt" -days 1 \
        -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" >"$out" 2>&1; then
        fail mosquitto "openssl could not make a certificate" "$out"
        return
    fi
    # What the hub writes into hub.mqtt.provision_dir (appliance/broker/src/acl.rs).
    : >"$data/mqtt/passwd"
    mosquitto_passwd -b "$data/mqtt/passwd" gatehouse-hub hub-pw >/dev/null 2>&1
    mosquitto_passwd -b "$data/mqtt/passwd" gate-7 gate-pw >/dev/null 2>&1
    cat >"$data/mqtt/acl" <<'ACL'
user gatehouse-hub
topic readwrite access/request
topic readwrite access/response/#
topic readwrite lora/#

user gate-7
topic write access/request
topic read access/response/7
ACL
    if id mosquitto >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
        owner=mosquitto
        chown mosquitto: "$m/db"
    fi
    if ! SRC_DIR="$data" DEST_DIR="$run" MOSQUITTO_USER="$owner" RELOAD=0 \
        "$overlay/usr/libexec/gatehouse/mqtt-sync" >"$out" 2>&1; then
        fail mosquitto "mqtt-sync failed" "$out"
        return
    fi
    plain="$(free_port)"
    tls="$(free_port)"
    # Our config, with only ports and paths moved.
    sed -e "s|^listener 1883 127.0.0.1$|listener $plain 127.0.0.1|" \
        -e "s|^listener 8883$|listener $tls 127.0.0.1|" \
        -e "s|/run/mosquitto/|$run/|g" \
        -e "s|^persistence_location .*|persistence_location $m/db/|" \
        "$overlay/etc/mosquitto/mosquitto.conf" >"$m/mosquitto.conf"
    if grep -v '^#' "$m/mosquitto.conf" | grep -q -e '1883 127' -e '^listener 8883' -e '/run/mosquitto'; then
        fail mosquitto "could not move ports/paths (mosquitto.conf changed shape?)"
        return
    fi
    mosquitto -c "$m/mosquitto.conf" >"$m/broker.log" 2>&1 &
    local broker=$!
    pids+=("$broker")
    for _ in $(seq 50); do
        if grep -q "Opening ipv4 listen socket on port $tls" "$m/broker.log" 2>/dev/null; then
            break
        fi
        kill -0 "$broker" 2>/dev/null || break
        sleep 0.1
    done
    if ! kill -0 "$broker" 2>/dev/null; then
        fail mosquitto "mosquitto did not start with our config" "$m/broker.log"
        return
    fi
    local got
    # The hub on loopback (plain) subscribes; gate-7 publishes over TLS on the LAN listener.
    mosquitto_sub -h 127.0.0.1 -p "$plain" -u gatehouse-hub -P hub-pw -t access/request \
        -C 1 -W 10 >"$m/sub.out" 2>"$m/sub.err" &
    local sub=$!
    pids+=("$sub")
    sleep 0.5
    mosquitto_pub -h 127.0.0.1 -p "$tls" --cafile "$data/tls/console.crt" \
        -u gate-7 -P gate-pw -t access/request -m "hello-$tls" -q 1 >"$out" 2>&1
    wait "$sub"
    got="$(cat "$m/sub.out")"
    if [ "$got" != "hello-$tls" ]; then
        cat "$out" "$m/sub.err" "$m/broker.log" >"$m/all.out"
        fail mosquitto "gate over TLS -> hub on loopback: got '$got'" "$m/all.out"
        return
    fi
    # Refusals: anonymous (both listeners), a wrong password, a gate reading another's topic.
    if mosquitto_pub -h 127.0.0.1 -p "$plain" -t access/request -m x >/dev/null 2>&1 ||
        mosquitto_pub -h 127.0.0.1 -p "$tls" --cafile "$data/tls/console.crt" \
            -t access/request -m x >/dev/null 2>&1 ||
        mosquitto_pub -h 127.0.0.1 -p "$plain" -u gate-7 -P wrong -t access/request \
            -m x >/dev/null 2>&1; then
        fail mosquitto "an anonymous client or a wrong password was accepted"
        return
    fi
    mosquitto_sub -h 127.0.0.1 -p "$tls" --cafile "$data/tls/console.crt" -u gate-7 -P gate-pw \
        -t access/response/8 -C 1 -W 3 >"$m/sub8.out" 2>/dev/null &
    sub=$!
    pids+=("$sub")
    sleep 0.5
    mosquitto_pub -h 127.0.0.1 -p "$plain" -u gatehouse-hub -P hub-pw -t access/response/8 \
        -m secret -q 1 >/dev/null 2>&1
    wait "$sub"
    if [ -s "$m/sub8.out" ]; then
        fail mosquitto "gate-7 read gate 8's responses (ACL not applied)"
        return
    fi
    ok mosquitto "TLS listener (gate) and loopback listener (hub) carry messages; anonymous, wrong password and cross-gate reads refused"
}

# --- genimage + RAUC (post-image.sh on dummy inputs) ------------------------------------------
make_rootfs() { # make_rootfs FILE: a small ext4 root with a kernel where boot.cmd loads it
    local tree="$tmp/rootfs-tree"
    rm -rf "$tree"
    mkdir -p "$tree/boot" "$tree/etc"
    head -c 65536 /dev/urandom >"$tree/boot/Image"
    printf 'VERSION_ID=%s\n' "$version" >"$tree/etc/os-release"
    mkfs.ext4 -q -F -L rootfs -d "$tree" "$1" 16M >/dev/null
}

check_image() { # check_image BOARD
    local b="$1"
    local c="image-$b" bin="$tmp/images-$b" out="$tmp/image-$b.out"
    need "$c" genimage mkimage mkfs.ext4 mkfs.vfat mcopy mdir sfdisk rauc mksquashfs || return
    mkdir -p "$bin/rpi-firmware/overlays"
    local f
    for f in bcm2711-rpi-4-b.dtb bcm2711-rpi-cm4.dtb rpi-firmware/start4.elf \
        rpi-firmware/fixup4.dat rpi-firmware/overlays/spi0-1cs.dtbo u-boot.bin; do
        printf 'dummy %s\n' "$f" >"$bin/$f"
    done
    make_rootfs "$bin/rootfs.ext4" || {
        fail "$c" "mkfs.ext4 failed"
        return
    }
    if ! TMPDIR="$tmp" "$board/common/post-image.sh" "$bin" "$b" >"$out" 2>&1; then
        fail "$c" "post-image.sh failed" "$out"
        return
    fi
    local img
    img="$(sed -n 's/^image \([^ ]*\.img\) {$/\1/p' "$board/$b/genimage.cfg")"
    if [ ! -s "$bin/$img" ]; then
        fail "$c" "genimage made no $img" "$out"
        return
    fi
    # Four partitions: boot (FAT), rootfs A, rootfs B, data.
    local table starts=() n
    table="$(sfdisk -d "$bin/$img" 2>/dev/null)"
    n="$(grep -c '^[^ ]*img[0-9] :' <<<"$table")"
    mapfile -t starts < <(sed -n 's/.*start= *\([0-9]*\),.*/\1/p' <<<"$table")
    if [ "$n" -ne 4 ] || ! grep -q 'type=c, bootable' <<<"$table"; then
        printf '%s\n' "$table" >"$out"
        fail "$c" "want 4 partitions with a bootable FAT first, got $n" "$out"
        return
    fi
    local label boot_files
    label="$(blkid -p -O "$((starts[3] * 512))" -s LABEL -o value "$bin/$img" 2>/dev/null)"
    boot_files="$(mdir -b -i "$bin/$img@@$((starts[0] * 512))" :: 2>/dev/null)"
    if [ "$label" != data ]; then
        fail "$c" "data partition label is '$label', want 'data'"
    elif ! grep -q 'boot.scr' <<<"$boot_files"; then
        fail "$c" "boot.scr missing from the boot partition"
    elif [ "$b" = rpi4_64 ] && ! grep -q -e 'config.txt' <<<"$boot_files"; then
        fail "$c" "config.txt missing from the boot partition"
    else
        ok "$c" "$img: boot (FAT: $(wc -l <<<"$boot_files") entries), rootfs A, rootfs B, data (label data)"
    fi

    # The RAUC bundle.
    local bundle="$bin/gatehouse-$b-$version.raucb" info="$tmp/rauc-$b.out" other="$tmp/other-keys"
    c="rauc-$b"
    if [ ! -s "$bundle" ]; then
        fail "$c" "post-image.sh made no $(basename "$bundle")" "$out"
        return
    fi
    if ! rauc info --keyring="$RAUC_CERT" --output-format=shell "$bundle" >"$info" 2>&1; then
        fail "$c" "rauc info --keyring refused the bundle" "$info"
        return
    fi
    if ! grep -q "^RAUC_MF_COMPATIBLE='gatehouse-$b'$" "$info" ||
        ! grep -q "^RAUC_MF_VERSION='$version'$" "$info"; then
        fail "$c" "bundle's compatible/version wrong" "$info"
        return
    fi
    "$board/common/rauc-dev-keys.sh" "$other" >/dev/null 2>&1
    if rauc info --keyring="$other/cert.pem" "$bundle" >/dev/null 2>&1; then
        fail "$c" "a bundle signed with another key was accepted"
        return
    fi
    if ! rauc --conf="$board/$b/rauc-system.conf" info --keyring="$RAUC_CERT" "$bundle" \
        >"$info" 2>&1; then
        fail "$c" "rauc with board/$b/rauc-system.conf" "$info"
        return
    fi
    ok "$c" "bundle verified with its keyring (gatehouse-$b $version), another key refused, system.conf parses"
}

# --- the gatehouse binary: the image's config, first boot ---------------------------------------
gatehouse_bin() {
    local g
    for g in "${GATEHOUSE_BIN:-}" "$root_dir/target/debug/gatehouse" "$root_dir/target/release/gatehouse"; do
        if [ -n "$g" ] && [ -x "$g" ]; then
            printf '%s\n' "$g"
            return 0
        fi
    done
    return 1
}

# A fake root with the image's config, data_dir moved into it.
fake_root() {
    local r="$tmp/fakeroot"
    mkdir -p "$r/etc/gatehouse" "$r/data/gatehouse" "$r/boot"
    sed "s|\"/data/gatehouse|\"$r/data/gatehouse|" \
        "$overlay/etc/gatehouse/gatehouse.toml" >"$r/etc/gatehouse/gatehouse.toml"
    printf '%s\n' "$r"
}

check_config() {
    local g r out="$tmp/config.out"
    g="$(gatehouse_bin)" || {
        fail config "no gatehouse binary (cargo build -p gatehouse, or GATEHOUSE_BIN)"
        return
    }
    r="$(fake_root)"
    if ! grep -q "data_dir = \"$r/data/gatehouse\"" "$r/etc/gatehouse/gatehouse.toml"; then
        fail config "could not move data_dir (gatehouse.toml changed shape?)"
    elif "$g" --config "$r/etc/gatehouse/gatehouse.toml" console >"$out" 2>&1 &&
        grep -q '^SHA-256:' "$out"; then
        ok config "$(basename "$g") loads the image's gatehouse.toml (console: $(sed -n 's/^console: *//p' "$out"))"
    else
        fail config "$g refused the image's gatehouse.toml" "$out"
    fi
}

check_first_boot() {
    local g r out="$tmp/first-boot.out" pub txt
    need first-boot wg || return
    g="$(gatehouse_bin)" || {
        fail first-boot "no gatehouse binary (cargo build -p gatehouse, or GATEHOUSE_BIN)"
        return
    }
    r="$(fake_root)"
    # The tunnel's first start, for real: the image's config with the tunnel in userspace
    # mode on a free loopback port (no TUN device, no firewall), until it has made its key
    # file and the peer list; then the files are checked as first boot relies on them.
    local cfg="$r/etc/gatehouse/tunnel-check.toml" port tun store keyfile published
    port="$(python3 -c 'import socket; u = socket.socket(type=socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0)); print(u.getsockname()[1])')"
    sed -e 's/^mode = "tun"$/mode = "userspace"/' -e "s/^listen_port = 51820$/listen_port = $port/" \
        -e 's/^firewall = "nftables"$/firewall = "none"/' \
        -e "/^\[tunnel\]$/a uapi_dir = \"$r/run/wireguard\"" \
        "$r/etc/gatehouse/gatehouse.toml" >"$cfg"
    store="$r/data/gatehouse/tunnel/wg0.conf"
    keyfile="$r/data/gatehouse/tunnel/wg0.key"
    if ! grep -q "^peers_file = \"$store\"$" "$cfg" ||
        ! grep -q "^private_key_file = \"$keyfile\"$" "$cfg"; then
        fail first-boot "the image's gatehouse.toml does not put the tunnel's files in /data/gatehouse/tunnel" "$cfg"
        return
    fi
    "$g" --config "$cfg" tunnel >"$tmp/tunnel.out" 2>&1 &
    tun=$!
    pids+=("$tun")
    local waited=0
    until grep -q '^# PublicKey = ' "$store" 2>/dev/null; do
        if ! kill -0 "$tun" 2>/dev/null || [ "$waited" -ge 100 ]; then
            fail first-boot "gatehouse tunnel made no peer list with a # PublicKey in 10 s" "$tmp/tunnel.out"
            return
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    kill -TERM "$tun" && wait "$tun" 2>/dev/null
    published="$(sed -n 's/^# PublicKey = //p' "$store" | head -n 1)"
    pub="$(wg pubkey <"$keyfile" 2>/dev/null)"
    if [ "$(stat -c %a "$keyfile" 2>/dev/null)" != 600 ]; then
        fail first-boot "the tunnel's key file is not 0600: $(stat -c %a "$keyfile" 2>&1)"
        return
    elif grep -qi '^[[:space:]]*private[[:space:]]*key' "$store"; then
        fail first-boot "the peer list (0660, the hub's to edit) holds the private key" "$store"
        return
    elif [ -z "$pub" ] || [ "$pub" != "$published" ]; then
        fail first-boot "the peer list publishes '$published', the key file's public key is '$pub'" "$store"
        return
    fi
    if ! ROOT="$r" GATEHOUSE="$g" CONFIG=/etc/gatehouse/gatehouse.toml RUN_AS="" DRY_RUN=1 \
        CONSOLE="" KEY_WAIT=1 "$overlay/usr/libexec/gatehouse/first-boot" >"$out" 2>&1; then
        fail first-boot "first-boot failed" "$out"
        return
    fi
    txt="$r/boot/gatehouse-first-boot.txt"
    if [ ! -s "$txt" ]; then
        fail first-boot "no gatehouse-first-boot.txt on the boot partition" "$out"
    elif ! grep -Eq '^    [A-Z0-9]{4}(-[A-Z0-9]{4}){6}$' "$txt"; then
        fail first-boot "no enrolment token in gatehouse-first-boot.txt" "$txt"
    elif ! grep -q "^    $pub$" "$txt"; then
        fail first-boot "WireGuard public key $pub not in gatehouse-first-boot.txt" "$txt"
    elif ! grep -Eq '^    ([0-9A-F]{2}:){31}[0-9A-F]{2}$' "$txt"; then
        fail first-boot "no certificate fingerprint in gatehouse-first-boot.txt" "$txt"
    elif [ ! -e "$r/data/gatehouse/.first-boot-done" ]; then
        fail first-boot "not marked done"
    else
        ok first-boot "the tunnel's first start: key file 0600, peer list without it; dry-run on a fake root: token, WireGuard public key, fingerprint in gatehouse-first-boot.txt"
    fi
}

check_shellcheck
check_units
check_users
check_nftables
check_mosquitto
for b in "${boards[@]}"; do
    check_image "$b"
done
check_config
check_first_boot

exit "$failed"
