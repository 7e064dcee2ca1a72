#!/usr/bin/env bash
# The access benchmark (`make bench-access`): the gates' three transports to the hub, HTTP,
# raw TCP and MQTT, measured against one hub on this machine, every decision answered only
# once its access-log row is durable (group commit, synchronous=FULL).
#
# A throw-away data directory is seeded by `gatehouse-bench-access seed` (GATES gates, one
# level opening all of them always, CARDS people with one card each, LOG_ROWS access-log
# rows), then `gatehouse hub` serves it on loopback ports it picks itself (HTTP, raw TCP,
# and its own embedded mosquitto for MQTT). For each transport gate-sim runs GATES
# simulated gates (the firmware's gate-core, one request in flight per gate) reading the
# enrolled cards:
#   - at each total offered rate of RATES (reads/s over all gates, RATE/GATES per gate)
#     for DURATION seconds: achieved decisions/s and latency p50/p99/p99.9, card read to
#     decision, of the hub's decisions;
#   - saturated (each gate reads its next card as soon as the previous one is decided):
#     decisions/s.
# Each run first reads cards at its rate for WARMUP seconds that are not measured: every
# run connects its gates afresh, and in the first one each gate starts with an empty
# allow-list and asks the hub for the full list at link-up (with 100,000 cards, thousands
# of frames per gate; later runs resume the lists from gate-sim's state file and sync a
# delta). That is not the steady state the figures are about; what the warm-up cost
# (decisions the gates had to make offline) is printed apart.
# Then one table, the hub's memory (VmRSS/VmHWM from /proc) with that data set, the
# access-log row count before and after, and the issue's targets beside the figures.
#
# Environment:
#   GATES=100  CARDS=100000  LOG_ROWS=1000000   the data set (the targets are stated for
#                     these; a smaller run says so)
#   DURATION=10       seconds measured per run
#   WARMUP=20         seconds per run before the measured ones (link-up, allow-list sync)
#   RATES="500 2000 10000"   total offered reads/s of the fixed-rate runs
#   TRANSPORTS="tcp http mqtt"
#   SATURATION=1      0 skips the saturation runs
#   KEEP=0            1 keeps the work directory (data dir, hub log, gate-sim output)
#   BENCH_DIR         where the work directory is made (default: $TMPDIR or /tmp); it
#                     must be a real disk for "durable" to mean anything
#   GATEHOUSE, SEEDER, GATE_SIM   binaries (defaults: target/release/gatehouse,
#                     target/release/gatehouse-bench-access, gate-fw/target/release/gate-sim)
#
# Touches nothing outside what it creates: a temporary directory and the processes it
# starts (the hub, which starts and stops its mosquitto, and gate-sim), killed by PID and
# removed on exit whatever happens. Network traffic stays on 127.0.0.1.
set -euo pipefail

root_dir="$(cd "$(dirname "$0")/.." && pwd)"

GATES="${GATES:-100}"
CARDS="${CARDS:-100000}"
LOG_ROWS="${LOG_ROWS:-1000000}"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-20}"
RATES="${RATES:-500 2000 10000}"
TRANSPORTS="${TRANSPORTS:-tcp http mqtt}"
SATURATION="${SATURATION:-1}"
KEEP="${KEEP:-0}"
GATEHOUSE="${GATEHOUSE:-$root_dir/target/release/gatehouse}"
SEEDER="${SEEDER:-$root_dir/target/release/gatehouse-bench-access}"
GATE_SIM="${GATE_SIM:-$root_dir/gate-fw/target/release/gate-sim}"

# The issue's scale and targets.
FULL_CARDS=100000
FULL_LOG_ROWS=1000000
TARGET_RATE=2000
TARGET_P99_TCP_MS=2
TARGET_P99_OTHER_MS=5
TARGET_TCP_PER_S=20000
TARGET_RSS_MB=50
# gate-sim's default: a request unanswered this long is decided offline by the gate.
REQUEST_TIMEOUT_MS=1500

die() {
    printf 'bench-access: error: %s\n' "$*" >&2
    exit 1
}
log() { printf 'bench-access: %s\n' "$*" >&2; }

is_count() { [[ "$1" =~ ^[1-9][0-9]*$ ]]; }
is_count "$GATES" || die "GATES must be a positive integer, got '$GATES'"
is_count "$CARDS" || die "CARDS must be a positive integer, got '$CARDS'"
[[ "$LOG_ROWS" =~ ^[0-9]+$ ]] || die "LOG_ROWS must be a non-negative integer, got '$LOG_ROWS'"
is_count "$DURATION" || die "DURATION must be a positive integer, got '$DURATION'"
[[ "$WARMUP" =~ ^[0-9]+$ ]] || die "WARMUP must be a non-negative integer, got '$WARMUP'"
for r in $RATES; do
    is_count "$r" || die "RATES must be positive integers, got '$r'"
done
for t in $TRANSPORTS; do
    case "$t" in
        tcp | http | mqtt) ;;
        *) die "unknown transport '$t' in TRANSPORTS (known: tcp http mqtt)" ;;
    esac
done
for b in "$GATEHOUSE" "$SEEDER" "$GATE_SIM"; do
    [ -x "$b" ] || die "$b not found; run 'make bench-access' (it builds them)"
done
for tool in awk sed grep; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found"
done
if [[ " $TRANSPORTS " == *" mqtt "* ]] && ! command -v mosquitto >/dev/null 2>&1 &&
    [ ! -x /usr/sbin/mosquitto ]; then
    die "mosquitto not found (the hub's embedded MQTT broker); run 'make deps'"
fi

# --- what this script owns, and its cleanup ---------------------------------------------
base_dir="${BENCH_DIR:-${TMPDIR:-/tmp}}"
work="$(mktemp -d "$base_dir/gh-bench-access.XXXXXX")"
hub_pid=""
broker_pid=""
sim_pid=""

stop_pid() { # pid: SIGTERM, up to 10 s, then SIGKILL
    local pid="$1" _
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [ -z "$sim_pid" ] || stop_pid "$sim_pid"
    [ -z "$hub_pid" ] || stop_pid "$hub_pid"
    # The hub stops its mosquitto; make sure of it if the hub was killed.
    [ -z "$broker_pid" ] || stop_pid "$broker_pid"
    wait 2>/dev/null || true
    if [ "$KEEP" = 1 ]; then
        log "work directory kept: $work"
    else
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- seed ---------------------------------------------------------------------------------
data="$work/data"
sim="$work/sim"
fs_type="$(stat -f -c %T "$work" 2>/dev/null || echo unknown)"
load_start="$(cut -d' ' -f1-3 /proc/loadavg)"
log "$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //')), kernel $(uname -r), load average $load_start"
log "work directory $work (filesystem $fs_type)"
case "$fs_type" in
    tmpfs | ramfs) log "WARNING: $fs_type is not a disk: fsync costs nothing here, 'durable' figures are not meaningful" ;;
esac
log "seeding: $GATES gates, $CARDS cards, $LOG_ROWS log rows"
"$SEEDER" seed --data-dir "$data" --out "$sim" --gates "$GATES" --cards "$CARDS" \
    --log-rows "$LOG_ROWS" >"$work/seed.out" 2> >(sed 's/^/bench-access:   /' >&2) ||
    die "seeding failed"
cat "$work/seed.out" >&2
cp "$sim/sim-state.json" "$work/state.json"

log_count() { "$SEEDER" log-count --data-dir "$data"; }
rows_before="$(log_count)" || die "cannot count the access log's rows"

# --- the hub --------------------------------------------------------------------------------
cat >"$work/hub.toml" <<EOF
# Written by scripts/bench-access.sh.
[general]
data_dir = "$data"

[hub]
http_listen = "127.0.0.1:0"
gate_tcp_listen = "127.0.0.1:0"

[hub.mqtt]
mode = "embedded"
listen = "127.0.0.1:0"
EOF
hub_log="$work/hub.log"
NO_COLOR=1 GATEHOUSE_LOG=info "$GATEHOUSE" --config "$work/hub.toml" hub >"$hub_log" 2>&1 &
hub_pid=$!

# The address logged with a message: `... <message> addr=127.0.0.1:PORT ...` (colour codes
# stripped in case the logger adds them anyway).
logged_addr() {
    sed -e 's/\x1b\[[0-9;]*m//g' "$hub_log" | grep -F "$1" | grep -o 'addr=127\.0\.0\.1:[0-9]*' |
        head -n 1 | sed 's/^addr=//' || true
}
logged_broker_pid() {
    sed -e 's/\x1b\[[0-9;]*m//g' "$hub_log" | grep -F 'MQTT broker ready' | grep -o ' pid=[0-9]*' |
        head -n 1 | sed 's/^ pid=//' || true
}
started_at=$SECONDS
http_addr=""
while [ -z "$http_addr" ]; do
    if ! kill -0 "$hub_pid" 2>/dev/null; then
        wait "$hub_pid" 2>/dev/null || true
        hub_pid=""
        die "'gatehouse hub' exited during start-up; its log: $(tail -n 5 "$hub_log")"
    fi
    [ $((SECONDS - started_at)) -lt 120 ] || die "the hub did not start listening within 120 s"
    sleep 0.2
    http_addr="$(logged_addr 'hub listening')"
done
tcp_addr="$(logged_addr 'gate TCP transport listening')"
mqtt_addr="$(logged_addr 'MQTT broker ready')"
broker_pid="$(logged_broker_pid)"
log "hub up (pid $hub_pid, $((SECONDS - started_at)) s): http $http_addr, tcp $tcp_addr, mqtt $mqtt_addr (mosquitto pid ${broker_pid:-?})"

mem_kb() { # pid field -> kB
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || true
}
# Settle, then the hub's memory with the data set loaded and nothing running.
sleep 2
rss_idle_kb="$(mem_kb "$hub_pid" VmRSS)"
hwm_idle_kb="$(mem_kb "$hub_pid" VmHWM)"

# --- runs -------------------------------------------------------------------------------------
declare -A res=()
run_sim() { # transport label gate-sim-pacing-args...
    local transport="$1" label="$2"
    shift 2
    local addr
    case "$transport" in
        tcp) addr="$tcp_addr" ;;
        http) addr="$http_addr" ;;
        mqtt) addr="$mqtt_addr" ;;
    esac
    if [ -z "$addr" ]; then
        res["$transport:$label"]="not measured: the hub logged no $transport address"
        return 0
    fi
    local out="$work/sim-$transport-$label.out" rc=0
    "$GATE_SIM" --transport "$transport" --hub "$addr" --gates "$sim/gates.toml" \
        --cards-file "$sim/cards.txt" --pick random --warmup "$WARMUP" --duration "$DURATION" \
        --request-timeout-ms "$REQUEST_TIMEOUT_MS" --state "$work/state.json" \
        --json-summary "$@" >"$out" 2>&1 &
    sim_pid=$!
    wait "$sim_pid" || rc=$?
    sim_pid=""
    if [ "$rc" -ne 0 ] || ! grep -q '^{' "$out"; then
        res["$transport:$label"]="not measured: gate-sim exited with status $rc: $(tail -n 1 "$out")"
        return 0
    fi
    res["$transport:$label"]="$(grep '^{' "$out" | tail -n 1)"
    log "  $(grep '^summary ' "$out" | tail -n 1 | grep -o ' requests=[0-9]* \| timeouts=[0-9]* \| errors=[0-9]* ' | tr -s '\n ' ' ' || true)"
    log "  $(grep '^window ' "$out" | tail -n 1 || true)"
}

for t in $TRANSPORTS; do
    for r in $RATES; do
        log "$t: $r reads/s offered for ${WARMUP} + ${DURATION} s"
        run_sim "$t" "$r" --total-rate "$r"
        sleep 1
    done
    if [ "$SATURATION" = 1 ]; then
        log "$t: saturation for ${WARMUP} + ${DURATION} s"
        run_sim "$t" sat --saturate
        sleep 1
    fi
done

load_end="$(cut -d' ' -f1-3 /proc/loadavg)"
rss_end_kb="$(mem_kb "$hub_pid" VmRSS)"
hwm_end_kb="$(mem_kb "$hub_pid" VmHWM)"
broker_rss_kb=""
[ -z "$broker_pid" ] || broker_rss_kb="$(mem_kb "$broker_pid" VmRSS)"
rows_running="$(log_count)" || die "cannot count the access log's rows"
stop_pid "$hub_pid"
hub_rc=0
wait "$hub_pid" 2>/dev/null || hub_rc=$?
hub_pid=""
rows_after="$(log_count)" || die "cannot count the access log's rows"

# --- report -------------------------------------------------------------------------------------
# jget JSON KEY: a number (or null) from a flat JSON object.
jget() {
    printf '%s\n' "$1" | grep -o "\"$2\":[^,}]*" | head -n 1 | sed 's/^[^:]*://' || true
}
# The "window" object of gate-sim's JSON summary (the measured part of the run).
window_of() { printf '%s\n' "$1" | sed -n 's/.*"window":\({[^}]*}\).*/\1/p'; }
fmt() { # value decimals -> formatted, or "-"
    if [ -z "$1" ] || [ "$1" = null ]; then echo "-"; else awk -v v="$1" -v d="$2" 'BEGIN { printf "%.*f", d, v }'; fi
}
# A percentile over every card read of the window, not only those the hub answered: when
# more reads were decided offline (no answer within the gate's timeout, an error reply)
# than the percentile leaves out, it lies beyond the timeout and is shown as ">1500".
pct() { # window-json key quantile
    local w="$1" key="$2" q="$3" reads offline
    reads="$(jget "$w" reads)"
    offline="$(jget "$w" offline)"
    if awk -v r="$reads" -v o="$offline" -v q="$q" 'BEGIN { exit !(r > 0 && o / r > 1 - q) }'; then
        echo ">$REQUEST_TIMEOUT_MS"
    else
        fmt "$(jget "$w" "$key")" 2
    fi
}
unsupported() { printf '%s\n' "$1" | grep -o '"unsupported":[0-9]*' | head -n 1 | sed 's/^[^:]*://' || true; }

full_scale=yes
[ "$CARDS" -eq "$FULL_CARDS" ] && [ "$LOG_ROWS" -eq "$FULL_LOG_ROWS" ] && [ "$GATES" -eq 100 ] || full_scale=no

echo
echo "Access benchmark: $GATES gates (gate-sim, one request in flight each), $CARDS cards, $LOG_ROWS log rows;"
echo "${DURATION} s measured per run after ${WARMUP} s of warm-up; hub, mosquitto and gate-sim on this $(nproc)-CPU"
echo "machine (load average $load_start at the start, $load_end at the end: other work on the machine"
echo "competes for the same CPUs); data dir on $fs_type"
printf '%-9s %10s %11s %8s %8s %9s %7s %8s %10s\n' "transport" "offered/s" "achieved/s" "p50 ms" "p99 ms" "p99.9 ms" \
    "errors" "offline" "warm-up"
printf '%-9s %10s %11s %8s %8s %9s %7s %8s %10s\n' "" "" "" "" "" "" "" "" "offline"
printf '%*s\n' 88 '' | tr ' ' '-'
total_hub=0
total_unsupported=0
declare -A p99_at=()
declare -A sat=()
for t in $TRANSPORTS; do
    labels="$RATES"
    if [ "$SATURATION" = 1 ]; then labels+=" sat"; fi
    for r in $labels; do
        j="${res["$t:$r"]:-}"
        shown="$r"
        [ "$r" = sat ] && shown="saturated"
        w="$(window_of "$j")"
        if [[ "$j" != "{"* ]] || [ -z "$w" ]; then
            printf '%-9s %10s  %s\n' "$t" "$shown" "${j:-not measured}"
            continue
        fi
        total_hub=$((total_hub + $(jget "$j" hub_decisions)))
        u="$(unsupported "$j")"
        u="${u:-0}"
        total_unsupported=$((total_unsupported + u))
        errors=$(($(jget "$j" errors) - u))
        warm_offline=$(($(jget "$j" offline) - $(jget "$w" offline)))
        printf '%-9s %10s %11s %8s %8s %9s %7s %8s %10s\n' "$t" "$shown" \
            "$(fmt "$(jget "$w" achieved_per_s)" 0)" "$(pct "$w" latency_ms_p50 0.5)" \
            "$(pct "$w" latency_ms_p99 0.99)" "$(pct "$w" latency_ms_p999 0.999)" \
            "$errors" "$(jget "$w" offline)" "$warm_offline"
        if [ "$r" = "$TARGET_RATE" ]; then p99_at[$t]="$(pct "$w" latency_ms_p99 0.99)"; fi
        if [ "$r" = sat ]; then sat[$t]="$(fmt "$(jget "$w" achieved_per_s)" 0)"; fi
    done
done
echo
echo "achieved/s: the hub's decisions (granted or denied, each answered once its log row was"
echo "durable) per second of the measured ${DURATION} s. Latency: card read to decision at the gate, over"
echo "the hub's decisions of the reads made in those ${DURATION} s; '>$REQUEST_TIMEOUT_MS' where more reads were"
echo "decided offline than the percentile leaves out. offline: reads of the measured part that the"
echo "gate decided itself (no answer within $REQUEST_TIMEOUT_MS ms, an error reply, link down). warm-up"
echo "offline: the same during the ${WARMUP} s warm-up (link-up; allow-list transfers, full ones in the"
echo "first run). errors (whole run): I/O errors, HTTP error statuses, MQTT refusals and the hub's"
echo "error replies, not counting 'unsupported' replies to the gates' other messages ($total_unsupported in all)."

if [ "$SATURATION" = 1 ]; then
    echo
    echo "Saturation (each gate reads its next card as soon as the previous one is decided):"
    for t in $TRANSPORTS; do
        printf '  %-5s %s decisions/s\n' "$t" "${sat[$t]:--}"
    done
fi

kb_mb() { awk -v k="$1" 'BEGIN { if (k == "") print "-"; else printf "%.1f", k / 1024 }'; }
echo
echo "Hub memory with $CARDS cards and $((rows_before)) log rows (gatehouse process; mosquitto apart):"
echo "  after start-up, idle:  VmRSS $(kb_mb "$rss_idle_kb") MB, VmHWM $(kb_mb "$hwm_idle_kb") MB"
echo "  after every run:       VmRSS $(kb_mb "$rss_end_kb") MB, VmHWM $(kb_mb "$hwm_end_kb") MB (peak)"
[ -z "$broker_rss_kb" ] || echo "  mosquitto (embedded):  VmRSS $(kb_mb "$broker_rss_kb") MB"

echo
echo "Access log: $rows_before rows before the runs, $rows_running at the end of the runs, $rows_after after the"
echo "hub stopped (exit status $hub_rc): +$((rows_after - rows_before)) rows for $total_hub decisions answered by the hub."
if [ "$((rows_after - rows_before))" -ge "$total_hub" ]; then
    echo "  every answered decision has its row (extra rows: answers that came after a gate's"
    echo "  timeout, and the gates' offline decisions uploaded later)"
else
    echo "  MISSING ROWS: fewer rows than answered decisions"
fi

# Targets.
verdict() { # ok(0/1) -> met / not met
    if [ "$1" = 1 ]; then echo "met"; else echo "not met"; fi
}
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "" && a !~ /^[>-]/ && a + 0 <= b + 0) }'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "" && a !~ /^[>-]/ && a + 0 >= b + 0) }'; }
echo
if [ "$full_scale" = yes ]; then
    echo "Targets (issue):"
else
    echo "Targets (issue; this run is scaled down to GATES=$GATES CARDS=$CARDS LOG_ROWS=$LOG_ROWS, so they do not apply as stated):"
fi
for t in $TRANSPORTS; do
    limit="$TARGET_P99_OTHER_MS"
    [ "$t" = tcp ] && limit="$TARGET_P99_TCP_MS"
    v="${p99_at[$t]:-}"
    if [ -z "$v" ]; then
        printf '  %-48s %s\n' "p99 <= $limit ms on $t at $TARGET_RATE/s:" "not measured (RATES has no $TARGET_RATE)"
    else
        ok=0
        le "$v" "$limit" && ok=1
        printf '  %-48s %s ms (%s)\n' "p99 <= $limit ms on $t at $TARGET_RATE/s:" "$v" "$(verdict $ok)"
    fi
done
if [[ " $TRANSPORTS " == *" tcp "* ]] && [ "$SATURATION" = 1 ]; then
    ok=0
    ge "${sat[tcp]:-}" "$TARGET_TCP_PER_S" && ok=1
    printf '  %-48s %s/s (%s)\n' ">= $TARGET_TCP_PER_S durably logged decisions/s on tcp:" "${sat[tcp]:--}" "$(verdict $ok)"
fi
for which in idle peak; do
    if [ "$which" = idle ]; then kb="$rss_idle_kb"; else kb="$hwm_end_kb"; fi
    ok=0
    le "$(kb_mb "$kb")" "$TARGET_RSS_MB" && ok=1
    printf '  %-48s %s MB (%s)\n' "hub RSS <= $TARGET_RSS_MB MB ($which):" "$(kb_mb "$kb")" "$(verdict $ok)"
done
