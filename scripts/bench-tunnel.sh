#!/usr/bin/env bash
# The tunnel benchmark (`make bench-tunnel`): WireGuard implementations head to head on
# this machine, both ends on the same cores.
#
# For each implementation pair, two network namespaces created here are joined by a veth
# pair (10.201.0.1/24 <-> 10.201.0.2/24); a userspace WireGuard implementation runs in
# each, configured with `wg` through its UAPI socket, with tunnel addresses 10.202.0.1/24
# and 10.202.0.2/24. Through the tunnel: iperf3 TCP with 1 and 4 streams, iperf3 UDP at a
# fixed rate (achieved rate and loss at the receiver), ping RTT, and the CPU time
# (user+system, from /proc/PID/stat) both daemons spend during the TCP 1-stream run, per
# Gbit delivered. Each measurement is the median of RUNS runs.
#
# Pairs: gatehouse<->gatehouse (TUN mode, `gatehouse wg -f IF`), gatehouse<->wireguard-go,
# wireguard-go -> gatehouse userspace mode (smoltcp; iperf3 reaches a service forward),
# boringtun-cli<->boringtun-cli (default threads and -t 1), wireguard-go<->wireguard-go,
# and the bare veth. An implementation whose binary is missing or does not come up is
# reported as "not measured: <why>"; no number is ever made up.
#
# Environment:
#   RUNS=3            runs per pair (median reported)
#   DURATION=10       seconds per iperf3 test
#   UDP_RATE=500M     iperf3 UDP target rate;  UDP_LEN=1350 datagram payload (fits MTU 1420)
#   PINGS=20          pings per run
#   PAIRS="..."       subset, space-separated, of: gh-gh gh-wggo gh-user btun btun1 wggo veth
#   GATEHOUSE, BORINGTUN, WIREGUARD_GO   binaries (defaults: target/release/gatehouse,
#                     target/tools/bin/boringtun-cli or PATH, wireguard-go)
#
# Needs root (namespaces, TUN devices). Touches nothing outside what it creates: its own
# namespaces (ghb-<pid>-a/b), its own interfaces and UAPI sockets (ghb<pid>a/b), its own
# processes (killed by PID) and a temporary directory; all removed on exit.
set -euo pipefail

root_dir="$(cd "$(dirname "$0")/.." && pwd)"

RUNS="${RUNS:-3}"
DURATION="${DURATION:-10}"
UDP_RATE="${UDP_RATE:-500M}"
UDP_LEN="${UDP_LEN:-1350}"
PINGS="${PINGS:-20}"
PAIRS="${PAIRS:-gh-gh gh-wggo gh-user btun btun1 wggo veth}"
GATEHOUSE="${GATEHOUSE:-$root_dir/target/release/gatehouse}"
WIREGUARD_GO="${WIREGUARD_GO:-wireguard-go}"
if [ -z "${BORINGTUN:-}" ]; then
    if [ -x "$root_dir/target/tools/bin/boringtun-cli" ]; then
        BORINGTUN="$root_dir/target/tools/bin/boringtun-cli"
    else
        BORINGTUN=boringtun-cli
    fi
fi

MTU=1420
PORT=51820
VETH_A=10.201.0.1
VETH_B=10.201.0.2
TUN_A=10.202.0.1
TUN_B=10.202.0.2
UAPI_DIR=/var/run/wireguard

die() {
    printf 'bench-tunnel: error: %s\n' "$*" >&2
    exit 1
}
log() { printf 'bench-tunnel: %s\n' "$*" >&2; }

[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer, got '$RUNS'"
[[ "$DURATION" =~ ^[1-9][0-9]*$ ]] || die "DURATION must be a positive integer, got '$DURATION'"
[[ "$PINGS" =~ ^[1-9][0-9]*$ ]] || die "PINGS must be a positive integer, got '$PINGS'"
[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, TUN devices); run as root"
for tool in ip iperf3 wg ping awk; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found; run 'make deps'"
done

# --- what this script owns, and its cleanup ---------------------------------------------
ns_a="ghb-$$-a"
ns_b="ghb-$$-b"
if_a="ghb$$a"
if_b="ghb$$b"
work="$(mktemp -d /tmp/ghb-bench.XXXXXX)"
# Every process started here, killed by PID. Start them as `ip netns exec NS CMD &` (not
# through a shell function, whose `&` would record a subshell's PID instead of CMD's):
# ip execs CMD, so $! is the daemon itself.
pids=()

kill_started() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        # Give each a moment to exit cleanly (daemons remove their sockets), then force.
        local i
        for i in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
            [ "$i" -lt 10 ] || kill -9 "$pid" 2>/dev/null || true
        done
        wait "$pid" 2>/dev/null || true
    done
    pids=()
}

teardown_pair() {
    kill_started
    ip netns del "$ns_a" 2>/dev/null || true
    ip netns del "$ns_b" 2>/dev/null || true
    rm -f "$UAPI_DIR/$if_a.sock" "$UAPI_DIR/$if_b.sock"
}

cleanup() {
    teardown_pair
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

in_a() { ip netns exec "$ns_a" "$@"; }
in_b() { ip netns exec "$ns_b" "$@"; }

setup_net() {
    ip netns add "$ns_a"
    ip netns add "$ns_b"
    ip -n "$ns_a" link add veth0 type veth peer name veth0 netns "$ns_b"
    ip -n "$ns_a" addr add "$VETH_A/24" dev veth0
    ip -n "$ns_b" addr add "$VETH_B/24" dev veth0
    local ns
    for ns in "$ns_a" "$ns_b"; do
        ip -n "$ns" link set lo up
        ip -n "$ns" link set veth0 up
    done
}

# --- WireGuard implementations -----------------------------------------------------------
# start_impl KIND NS IFNAME: starts a userspace implementation in the foreground (as a child
# of this script, so its PID is known), waits for its UAPI socket. Sets started_pid, or
# sets fail_reason and returns 1.
started_pid=""
fail_reason=""

impl_name() {
    case "$1" in
        gh) echo gatehouse ;;
        wggo) echo wireguard-go ;;
        btun) echo boringtun-cli ;;
        btun1) echo "boringtun-cli -t 1" ;;
    esac
}

impl_binary() {
    case "$1" in
        gh) echo "$GATEHOUSE" ;;
        wggo) echo "$WIREGUARD_GO" ;;
        btun | btun1) echo "$BORINGTUN" ;;
    esac
}

wait_for_socket() { # PID SOCKET -> 0 when the socket exists, 1 when PID died or timeout
    local pid="$1" sock="$2" i
    for i in $(seq 1 50); do
        [ -S "$sock" ] && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

last_log_line() {
    local line
    line="$(grep -v '^[[:space:]]*$' "$1" 2>/dev/null | tail -n 1 | cut -c1-120)" || true
    [ -z "$line" ] || printf ' (last output: %s)' "$line"
}

start_impl() {
    local kind="$1" ns="$2" ifname="$3"
    local bin logf="$work/$ifname.log"
    bin="$(impl_binary "$kind")"
    if ! command -v "$bin" >/dev/null 2>&1; then
        fail_reason="$(impl_name "$kind") binary not found ($bin)"
        [ "$kind" != gh ] || fail_reason+="; run 'make build'"
        [[ "$kind" != btun* ]] || fail_reason+="; run 'scripts/deps.sh bench'"
        return 1
    fi
    rm -f "$UAPI_DIR/$ifname.sock"
    case "$kind" in
        gh) ip netns exec "$ns" "$bin" wg -f "$ifname" >"$logf" 2>&1 & ;;
        wggo) ip netns exec "$ns" env WG_PROCESS_FOREGROUND=1 "$bin" -f "$ifname" >"$logf" 2>&1 & ;;
        btun) ip netns exec "$ns" "$bin" -f --disable-drop-privileges "$ifname" >"$logf" 2>&1 & ;;
        btun1) ip netns exec "$ns" "$bin" -f --disable-drop-privileges -t 1 "$ifname" >"$logf" 2>&1 & ;;
    esac
    started_pid=$!
    pids+=("$started_pid")
    if ! wait_for_socket "$started_pid" "$UAPI_DIR/$ifname.sock"; then
        if kill -0 "$started_pid" 2>/dev/null; then
            fail_reason="$(impl_name "$kind") did not create $UAPI_DIR/$ifname.sock within 5 s"
        else
            local rc=0
            wait "$started_pid" 2>/dev/null || rc=$?
            fail_reason="$(impl_name "$kind") ($bin) exited with status $rc without creating its UAPI socket"
        fi
        fail_reason+="$(last_log_line "$logf")"
        return 1
    fi
    if ! ip -n "$ns" link show "$ifname" >/dev/null 2>&1; then
        fail_reason="$(impl_name "$kind") created no interface $ifname"
        return 1
    fi
}

# configure_end NS IFNAME PRIVATE_KEY_FILE PEER_PUBLIC_KEY PEER_ENDPOINT_IP TUNNEL_ADDR
configure_end() {
    local ns="$1" ifname="$2" keyfile="$3" peer="$4" endpoint="$5" addr="$6" err
    if ! err="$(ip netns exec "$ns" wg set "$ifname" listen-port "$PORT" private-key "$keyfile" \
        peer "$peer" allowed-ips 10.202.0.0/24 endpoint "$endpoint:$PORT" 2>&1)"; then
        fail_reason="'wg set $ifname' failed: $err"
        return 1
    fi
    ip -n "$ns" addr add "$addr/24" dev "$ifname"
    ip -n "$ns" link set "$ifname" mtu "$MTU" up
}

# wait_tunnel NS TARGET: the first packets carry the handshake; allow a few seconds.
wait_tunnel() {
    local ns="$1" target="$2" i
    for i in $(seq 1 10); do
        ip netns exec "$ns" ping -c 1 -W 1 -q "$target" >/dev/null 2>&1 && return 0
        [ "$i" -lt 10 ] || break
    done
    return 1
}

# --- one tunnel pair ----------------------------------------------------------------------
# setup_pair KIND_A KIND_B: both ends up and talking, or fail_reason set.
daemon_pids=()
setup_pair() {
    local ka="$1" kb="$2"
    (umask 077 && wg genkey >"$work/a.key")
    (umask 077 && wg genkey >"$work/b.key")
    local pub_a pub_b
    pub_a="$(wg pubkey <"$work/a.key")"
    pub_b="$(wg pubkey <"$work/b.key")"
    start_impl "$ka" "$ns_a" "$if_a" || return 1
    daemon_pids+=("$started_pid")
    start_impl "$kb" "$ns_b" "$if_b" || return 1
    daemon_pids+=("$started_pid")
    configure_end "$ns_a" "$if_a" "$work/a.key" "$pub_b" "$VETH_B" "$TUN_A" || return 1
    configure_end "$ns_b" "$if_b" "$work/b.key" "$pub_a" "$VETH_A" "$TUN_B" || return 1
    if ! wait_tunnel "$ns_a" "$TUN_B"; then
        fail_reason="no ping through the tunnel after 10 s (handshake failed?)"
        return 1
    fi
}

# conf_value FILE SECTION KEY: the value of KEY in [SECTION] of a wg-style config file
# (keys case-insensitive, whitespace around '=' ignored, comments skipped), or nothing.
conf_value() {
    awk -v want_sec="$2" -v want_key="$3" '
        /^[[:space:]]*#/ { next }
        /^[[:space:]]*\[/ { sec = $0; gsub(/[][[:space:]]/, "", sec); next }
        tolower(sec) == tolower(want_sec) {
            i = index($0, "=")
            if (i == 0) next
            k = substr($0, 1, i - 1); v = substr($0, i + 1)
            gsub(/^[[:space:]]+|[[:space:]]+$/, "", k); gsub(/^[[:space:]]+|[[:space:]]+$/, "", v)
            if (tolower(k) == tolower(want_key)) { print v; exit }
        }' "$1"
}

# setup_userspace: gatehouse's userspace mode (smoltcp, no TUN device) in namespace B as
# the gateway, wireguard-go in A as the client. iperf3 listens on B's loopback and is
# reached through a gateway service at the tunnel address, so TCP goes through smoltcp.
# The client is added the way an admin adds one: `gatehouse peer add --public-key`.
setup_userspace() {
    if [ ! -x "$GATEHOUSE" ]; then
        fail_reason="gatehouse binary not found ($GATEHOUSE); run 'make build'"
        return 1
    fi
    local cfg="$work/userspace.toml" out="$work/client.conf" err
    mkdir -p "$work/gh-data"
    cat >"$cfg" <<EOF
[general]
data_dir = "$work/gh-data"

[tunnel]
interface = "$if_b"
mode = "userspace"
listen_port = $PORT
address = "$TUN_A/24"
public_endpoint = "$VETH_B:$PORT"
uapi_dir = "$UAPI_DIR"
firewall = "none"

[[tunnel.service]]
name = "iperf3"
port = 5201
target = "127.0.0.1:5201"
EOF
    (umask 077 && wg genkey >"$work/a.key")
    local pub_a
    pub_a="$(wg pubkey <"$work/a.key")"
    local rc=0
    in_b "$GATEHOUSE" --config "$cfg" peer add bench --role admin --public-key "$pub_a" \
        >"$out" 2>"$work/peer-add.err" || rc=$?
    if [ "$rc" -ne 0 ]; then
        fail_reason="'gatehouse peer add' failed with status $rc$(last_log_line "$work/peer-add.err")"
        return 1
    fi
    # The client config: [Interface] Address = ..., [Peer] PublicKey = <gateway> and,
    # when the gateway set one, PresharedKey. (Keys are base64 and end in '=': split each
    # line at its first '=' only.)
    local client_addr gw_pub psk
    client_addr="$(conf_value "$out" Interface Address)"
    client_addr="${client_addr%%,*}"
    gw_pub="$(conf_value "$out" Peer PublicKey)"
    psk="$(conf_value "$out" Peer PresharedKey)"
    if [ -z "$client_addr" ] || [ -z "$gw_pub" ]; then
        fail_reason="'gatehouse peer add' printed no client config with Address and [Peer] PublicKey"
        return 1
    fi
    local psk_args=()
    if [ -n "$psk" ]; then
        (umask 077 && printf '%s\n' "$psk" >"$work/a.psk")
        psk_args=(preshared-key "$work/a.psk")
    fi
    ip netns exec "$ns_b" iperf3 -s -B 127.0.0.1 --idle-timeout 20 >/dev/null 2>&1 &
    pids+=("$!")
    ip netns exec "$ns_b" "$GATEHOUSE" --config "$cfg" tunnel >"$work/$if_b.log" 2>&1 &
    started_pid=$!
    pids+=("$started_pid")
    if ! wait_for_socket "$started_pid" "$UAPI_DIR/$if_b.sock"; then
        rc=0
        if kill -0 "$started_pid" 2>/dev/null; then
            fail_reason="'gatehouse tunnel' (userspace) did not create its UAPI socket within 5 s"
        else
            wait "$started_pid" 2>/dev/null || rc=$?
            fail_reason="'gatehouse --config ... tunnel' (mode userspace) exited with status $rc without creating its UAPI socket"
        fi
        fail_reason+="$(last_log_line "$work/$if_b.log")"
        return 1
    fi
    daemon_pids+=("$started_pid")
    start_impl wggo "$ns_a" "$if_a" || return 1
    daemon_pids+=("$started_pid")
    if ! err="$(in_a wg set "$if_a" private-key "$work/a.key" \
        peer "$gw_pub" "${psk_args[@]}" allowed-ips 10.202.0.0/24 endpoint "$VETH_B:$PORT" 2>&1)"; then
        fail_reason="'wg set $if_a' failed: $err"
        return 1
    fi
    [[ "$client_addr" == */* ]] || client_addr+="/32"
    ip -n "$ns_a" addr add "$client_addr" dev "$if_a"
    ip -n "$ns_a" link set "$if_a" mtu "$MTU" up
    ip -n "$ns_a" route replace 10.202.0.0/24 dev "$if_a"
    # smoltcp may not answer ping: probe readiness with a short TCP test instead.
    local i
    for i in $(seq 1 5); do
        if timeout 10 ip netns exec "$ns_a" iperf3 -c "$TUN_A" -t 1 --connect-timeout 2000 \
            >/dev/null 2>&1; then
            return 0
        fi
        sleep 1
    done
    fail_reason="iperf3 could not reach the gateway's service at $TUN_A:5201 through the tunnel"
    return 1
}

# --- measurements ---------------------------------------------------------------------------
cpu_ticks() { # sum of utime+stime (clock ticks) of the given PIDs
    local total=0 pid rest
    for pid in "$@"; do
        # Field 2 (comm) may contain spaces: take what follows the last ')'.
        rest="$(sed -e 's/^.*) //' "/proc/$pid/stat" 2>/dev/null)" || continue
        # After comm: state is field 3, utime field 14, stime field 15 -> here 12 and 13.
        total=$((total + $(awk '{ print $12 + $13 }' <<<"$rest")))
    done
    echo "$total"
}
clk_tck="$(getconf CLK_TCK)"

# iperf3 text output, receiver line: "[SUM] 0.00-10.00 sec 3.42 GBytes 2932 Mbits/sec ... receiver"
parse_receiver() { # -> "<Mbit/s> <seconds> <loss % or ->"
    awk '/receiver$/ { line = $0 }
         END {
             if (line == "") exit 1
             n = split(line, f, " ")
             rate = ""; secs = ""; loss = "-"
             for (i = 1; i <= n; i++) {
                 if (f[i] == "Mbits/sec") rate = f[i - 1]
                 if (f[i] ~ /^[0-9.]+-[0-9.]+$/ && secs == "") { split(f[i], t, "-"); secs = t[2] }
                 if (f[i] ~ /^\([0-9.e+-]+%\)$/) { loss = f[i]; gsub(/[()%]/, "", loss) }
             }
             if (rate == "" || secs == "") exit 1
             print rate, secs, loss
         }'
}

# run_iperf TARGET ARGS...: one iperf3 client run from namespace A. Sets iperf_rate (Mbit/s
# at the receiver), iperf_secs, iperf_loss (UDP, else "-") and iperf_cpu (daemon CPU seconds).
iperf_rate="" iperf_secs="" iperf_loss="" iperf_cpu=""
run_iperf() {
    local target="$1"
    shift
    local before after out parsed
    before="$(cpu_ticks "${daemon_pids[@]}")"
    if ! out="$(timeout $((DURATION + 30)) ip netns exec "$ns_a" iperf3 -c "$target" -f m \
        -t "$DURATION" --connect-timeout 5000 "$@" 2>&1)"; then
        log "  iperf3 $* failed: $(tail -n 1 <<<"$out")"
        return 1
    fi
    after="$(cpu_ticks "${daemon_pids[@]}")"
    if ! parsed="$(parse_receiver <<<"$out")"; then
        log "  iperf3 $*: no receiver summary in its output"
        return 1
    fi
    read -r iperf_rate iperf_secs iperf_loss <<<"$parsed"
    iperf_cpu="$(awk -v t=$((after - before)) -v hz="$clk_tck" 'BEGIN { printf "%.3f", t / hz }')"
}

gbits() { awk -v r="$1" 'BEGIN { printf "%.3f", r / 1000 }'; }

run_ping() { # -> average RTT in ms
    local target="$1" out
    out="$(ip netns exec "$ns_a" ping -c "$PINGS" -i 0.2 -q -W 2 "$target" 2>&1)" || return 1
    awk -F'/' '/^(rtt|round-trip)/ { print $5; found = 1 } END { exit !found }' <<<"$out"
}

# Results: res[<pair>:<metric>] holds space-separated per-run values.
declare -A res=()
declare -A note=()
declare -A label=()
add() { res["$1:$2"]+="$3 "; }

median() { # values... -> median, or "" when none
    printf '%s\n' "$@" | awk 'NF' | sort -g | awk '{ v[NR] = $1 }
        END { if (NR == 0) exit; if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
med() { # pair metric
    local vals
    read -r -a vals <<<"${res["$1:$2"]:-}"
    [ "${#vals[@]}" -gt 0 ] || return 0
    median "${vals[@]}"
}

measure_runs() { # pair target has_udp has_cpu
    local pair="$1" target="$2" has_udp="$3" has_cpu="$4" run r
    for run in $(seq 1 "$RUNS"); do
        log "  run $run/$RUNS: TCP 1 stream"
        if run_iperf "$target"; then
            add "$pair" tcp1 "$(gbits "$iperf_rate")"
            if [ "$has_cpu" = yes ]; then
                add "$pair" cpu "$(awk -v c="$iperf_cpu" -v r="$iperf_rate" -v s="$iperf_secs" \
                    'BEGIN { g = r / 1000 * s; if (g > 0) printf "%.4f", c / g }')"
            fi
        fi
        sleep 1
        log "  run $run/$RUNS: TCP 4 streams"
        if run_iperf "$target" -P 4; then
            add "$pair" tcp4 "$(gbits "$iperf_rate")"
        fi
        sleep 1
        if [ "$has_udp" = yes ]; then
            log "  run $run/$RUNS: UDP at $UDP_RATE"
            if run_iperf "$target" -u -b "$UDP_RATE" -l "$UDP_LEN"; then
                add "$pair" udp "$(gbits "$iperf_rate")"
                add "$pair" loss "$iperf_loss"
            fi
            sleep 1
        fi
        log "  run $run/$RUNS: ping x$PINGS"
        if r="$(run_ping "$target")"; then
            add "$pair" ping "$r"
        else
            log "  ping failed"
        fi
    done
}

bench_pair() { # pair-id
    local pair="$1" ka="" kb=""
    case "$pair" in
        gh-gh) ka=gh kb=gh label[$pair]="gatehouse <-> gatehouse (TUN)" ;;
        gh-wggo) ka=gh kb=wggo label[$pair]="gatehouse <-> wireguard-go" ;;
        gh-user) label[$pair]="wireguard-go -> gatehouse userspace" ;;
        btun) ka=btun kb=btun label[$pair]="boringtun-cli <-> boringtun-cli" ;;
        btun1) ka=btun1 kb=btun1 label[$pair]="boringtun-cli -t 1 <-> boringtun-cli -t 1" ;;
        wggo) ka=wggo kb=wggo label[$pair]="wireguard-go <-> wireguard-go" ;;
        veth) label[$pair]="bare veth (no tunnel)" ;;
        *) die "unknown pair '$pair' in PAIRS (known: gh-gh gh-wggo gh-user btun btun1 wggo veth)" ;;
    esac
    log "${label[$pair]}"
    daemon_pids=()
    fail_reason=""
    setup_net
    case "$pair" in
        veth)
            ip netns exec "$ns_b" iperf3 -s --idle-timeout 20 >/dev/null 2>&1 &
            pids+=("$!")
            sleep 0.5
            measure_runs "$pair" "$VETH_B" yes no
            ;;
        gh-user)
            if setup_userspace; then
                # UDP is not measured: services and forwards of userspace mode are TCP.
                measure_runs "$pair" "$TUN_A" no yes
            else
                note[$pair]="not measured: $fail_reason"
            fi
            ;;
        *)
            if setup_pair "$ka" "$kb"; then
                ip netns exec "$ns_b" iperf3 -s --idle-timeout 20 >/dev/null 2>&1 &
                pids+=("$!")
                sleep 0.5
                measure_runs "$pair" "$TUN_B" yes yes
            else
                note[$pair]="not measured: $fail_reason"
            fi
            ;;
    esac
    [ -z "${note[$pair]:-}" ] || log "  ${note[$pair]}"
    teardown_pair
}

log "RUNS=$RUNS DURATION=${DURATION}s UDP_RATE=$UDP_RATE PINGS=$PINGS; $(nproc) CPUs, kernel $(uname -r)"
read -r -a pair_list <<<"$PAIRS"
for p in "${pair_list[@]}"; do
    bench_pair "$p"
done

# --- report -----------------------------------------------------------------------------------
fmt() { # value [decimals] -> formatted or "-"
    if [ -z "$1" ]; then echo "-"; else awk -v v="$1" -v d="${2:-2}" 'BEGIN { printf "%.*f", d, v }'; fi
}

echo
echo "Tunnel benchmark: median of $RUNS run(s), ${DURATION}s per iperf3 test, both ends on this $(nproc)-CPU machine"
printf '%-42s %9s %9s %22s %9s %10s\n' "pair" "TCP-1" "TCP-4" "UDP $UDP_RATE (loss)" "ping" "CPU s"
printf '%-42s %9s %9s %22s %9s %10s\n' "" "Gbit/s" "Gbit/s" "Gbit/s" "ms" "per Gbit"
printf '%*s\n' 106 '' | tr ' ' '-'
for p in "${pair_list[@]}"; do
    if [ -n "${note[$p]:-}" ]; then
        printf '%-42s %s\n' "${label[$p]}" "${note[$p]}"
        continue
    fi
    udp="$(med "$p" udp)"
    if [ -n "$udp" ]; then
        udp_s="$(fmt "$udp" 3) ($(fmt "$(med "$p" loss)" 2)%)"
    elif [ "$p" = gh-user ]; then
        udp_s="n/a (TCP services)"
    else
        udp_s="-"
    fi
    if [ "$p" = veth ]; then
        cpu_s="n/a"
    else
        cpu_s="$(fmt "$(med "$p" cpu)" 3)"
    fi
    printf '%-42s %9s %9s %22s %9s %10s\n' "${label[$p]}" "$(fmt "$(med "$p" tcp1)")" \
        "$(fmt "$(med "$p" tcp4)")" "$udp_s" "$(fmt "$(med "$p" ping)" 3)" "$cpu_s"
done
echo
echo "CPU s per Gbit: user+system time of both WireGuard daemons during the TCP 1-stream run,"
echo "divided by the Gbit iperf3 delivered. '-' means every run of that test failed."

# Ratios: each measured gatehouse row against each measured peer row.
ratio() { # a b -> a/b formatted, or "-"
    if [ -z "$1" ] || [ -z "$2" ]; then
        echo "-"
    else
        awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'
    fi
}
echo
echo "Ratios (gatehouse / peer; throughput: higher is better, CPU per Gbit: lower is better)"
any_gh=no
for g in gh-gh gh-wggo gh-user; do
    [[ " ${pair_list[*]} " == *" $g "* ]] || continue
    any_gh=yes
    if [ -n "${note[$g]:-}" ]; then
        printf '  %s: %s\n' "${label[$g]}" "${note[$g]}"
        continue
    fi
    for p in btun btun1 wggo veth; do
        [[ " ${pair_list[*]} " == *" $p "* ]] || continue
        [ -z "${note[$p]:-}" ] || continue
        cpu_r="n/a"
        [ "$p" = veth ] || cpu_r="$(ratio "$(med "$g" cpu)" "$(med "$p" cpu)")"
        printf '  %-36s vs %-41s TCP-1 %7s  TCP-4 %7s  CPU/Gbit %7s\n' "${label[$g]}" "${label[$p]}" \
            "$(ratio "$(med "$g" tcp1)" "$(med "$p" tcp1)")" \
            "$(ratio "$(med "$g" tcp4)" "$(med "$p" tcp4)")" "$cpu_r"
    done
done
[ "$any_gh" = yes ] || echo "  none: no gatehouse pair in PAIRS"

# The target of issue 2: single-stream TCP >= 2x boringtun-cli -t 1, CPU per Gbit <= 1/2 of it.
if [ -z "${note[gh-gh]:-}" ] && [ -z "${note[btun1]:-}" ] &&
    [ -n "$(med gh-gh tcp1)" ] && [ -n "$(med btun1 tcp1)" ]; then
    echo
    awk -v g="$(med gh-gh tcp1)" -v b="$(med btun1 tcp1)" -v gc="$(med gh-gh cpu)" -v bc="$(med btun1 cpu)" 'BEGIN {
        t = g / b; ok1 = t >= 2 ? "met" : "not met"
        printf "Target TCP-1 >= 2x boringtun-cli -t 1: %.2fx (%s)\n", t, ok1
        if (gc != "" && bc != "" && bc > 0) {
            c = gc / bc; ok2 = c <= 0.5 ? "met" : "not met"
            printf "Target CPU per Gbit <= 0.5x boringtun-cli -t 1: %.2fx (%s)\n", c, ok2
        }
    }'
fi
