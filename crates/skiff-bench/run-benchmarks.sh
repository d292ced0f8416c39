#!/usr/bin/env bash
# Runs the measurements of docs/benchmarks.md against a broker this script starts and stops.
#
#   bash crates/skiff-bench/run-benchmarks.sh [what...]
#
# what: startup produce produce-batch produce-lz4 produce-lz4-batch produce-1k produce-1k-batch
#       consume consume-batch latency latency-linger5 (default: all, in that order).
# The broker is restarted on an empty data directory for each of them; the runs of one share it.
# Build first: cargo build --release -p skiff -p skiff-bench
# Environment: SKIFF (broker binary), SKIFF_BENCH (bench binary), RUNS (default 2),
# KAFKA_ADDR (default 127.0.0.1:19192), HTTP_ADDR (default 127.0.0.1:19744),
# DATA_DIR (default /tmp/skiff-bench-data; removed before and after).
#
# Every run prints the tool's JSON summary followed by a CPU line: seconds of CPU used by the
# broker, by the client, and by everything else on the machine during the run (non-zero "other"
# means the figures were disturbed by other work). Needs python3 for the start-up timing.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
SKIFF="${SKIFF:-$TARGET/release/skiff}"
SKIFF_BENCH="${SKIFF_BENCH:-$TARGET/release/skiff-bench}"
RUNS="${RUNS:-2}"
KAFKA_ADDR="${KAFKA_ADDR:-127.0.0.1:19192}"
HTTP_ADDR="${HTTP_ADDR:-127.0.0.1:19744}"
DATA_DIR="${DATA_DIR:-/tmp/skiff-bench-data}"
LOG="${LOG:-/tmp/skiff-bench-broker.log}"
HZ="$(getconf CLK_TCK)"
BROKER_PID=""

stop_broker() {
    if [[ -n "$BROKER_PID" ]] && kill -0 "$BROKER_PID" 2>/dev/null; then
        kill -TERM "$BROKER_PID"
        for _ in $(seq 100); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$BROKER_PID" 2>/dev/null && kill -KILL "$BROKER_PID"
    fi
    BROKER_PID=""
}

cleanup() {
    stop_broker
    rm -rf "$DATA_DIR"
}
trap cleanup EXIT

# Starts the broker on an empty (or, with "keep", the existing) data directory; records the wall
# time from spawn until the Kafka port accepts a connection and until it answers ApiVersions.
start_broker() {
    [[ "${1:-}" == keep ]] || rm -rf "$DATA_DIR"
    local out
    out="$(python3 - "$SKIFF" "$DATA_DIR" "$KAFKA_ADDR" "$HTTP_ADDR" "$LOG" <<'EOF'
import socket, subprocess, sys, time
skiff, data, kafka, http, log = sys.argv[1:]
host, port = kafka.rsplit(":", 1)
start = time.monotonic()
proc = subprocess.Popen(
    [skiff, "serve", "--data-dir", data, "--kafka-addr", kafka, "--http-addr", http],
    stdout=subprocess.DEVNULL, stderr=open(log, "w"), start_new_session=True)
# ApiVersions v0, correlation id 1, null client id: the broker serves once it answers this.
request = bytes.fromhex("0000000a" "0012" "0000" "00000001" "ffff")
accepted = None
while True:
    try:
        with socket.create_connection((host, int(port)), timeout=1) as s:
            accepted = accepted or time.monotonic()
            s.sendall(request)
            if len(s.recv(8)) >= 8:
                break
    except OSError:
        pass
    if proc.poll() is not None:
        sys.exit(f"broker exited with {proc.returncode}; see {log}")
    if time.monotonic() - start > 10:
        proc.kill()
        sys.exit("broker did not answer within 10 s")
    time.sleep(0.0002)
print(proc.pid, round((accepted - start) * 1000, 2), round((time.monotonic() - start) * 1000, 2))
EOF
)"
    read -r BROKER_PID SPAWN_TO_ACCEPT_MS SPAWN_TO_ANSWER_MS <<<"$out"
}

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$BROKER_PID/status"; }
proc_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }

# bench LABEL ARGS...: one skiff-bench run with CPU accounting.
bench() {
    local label="$1"
    shift
    local b0 s0 b1 s1 client out
    b0="$(proc_ticks "$BROKER_PID")"
    s0="$(busy_ticks)"
    echo "== $label: skiff-bench $*"
    out="$(mktemp)"
    /usr/bin/time -f "%U %S" -o "$out.time" "$SKIFF_BENCH" "$@" --bootstrap "$KAFKA_ADDR" | tee "$out"
    b1="$(proc_ticks "$BROKER_PID")"
    s1="$(busy_ticks)"
    client="$(awk '{print $1 + $2}' "$out.time")"
    awk -v b=$((b1 - b0)) -v s=$((s1 - s0)) -v c="$client" -v hz="$HZ" -v label="$label" '
        /^\{/ { if (match($0, /"elapsed_secs":[0-9.e+-]+/)) wall = substr($0, RSTART + 15, RLENGTH - 15) }
        END {
            other = s / hz - b / hz - c; if (other < 0) other = 0
            printf "CPU %s: broker %.2f s, client %.2f s, other %.2f s", label, b / hz, c, other
            if (wall > 0) printf " (over %.2f s measured: broker %.0f%%, client %.0f%% of one core)", wall, 100 * b / hz / wall, 100 * c / wall
            printf "\n"
        }' "$out"
    rm -f "$out" "$out.time"
}

run_startup() {
    local line
    for i in $(seq "$RUNS"); do
        start_broker
        sleep 2
        line="spawn-to-accept ${SPAWN_TO_ACCEPT_MS} ms, spawn-to-ApiVersions-answer ${SPAWN_TO_ANSWER_MS} ms"
        echo "startup (empty data dir) run $i: $line, $(grep -o 'startup_ms=[0-9]*' "$LOG"), idle VmRSS $(rss_kb) kB after 2 s"
        stop_broker
    done
    # A restart after a clean shutdown, with 8 partitions holding 2 M messages.
    start_broker
    "$SKIFF_BENCH" produce --bootstrap "$KAFKA_ADDR" --fresh --topic restart --partitions 8 \
        --messages 2000000 --api batch >/dev/null
    stop_broker
    for i in $(seq "$RUNS"); do
        start_broker keep
        sleep 2
        line="spawn-to-accept ${SPAWN_TO_ACCEPT_MS} ms, spawn-to-ApiVersions-answer ${SPAWN_TO_ANSWER_MS} ms"
        echo "startup (8 partitions, 200 MB) run $i: $line, $(grep -o 'startup_ms=[0-9]*' "$LOG"), idle VmRSS $(rss_kb) kB after 2 s"
        stop_broker
    done
}

run_all() {
    local what=("$@")
    [[ ${#what[@]} -gt 0 ]] || what=(startup produce produce-batch produce-lz4 produce-lz4-batch
        produce-1k produce-1k-batch consume consume-batch latency latency-linger5)
    for w in "${what[@]}"; do
        if [[ "$w" == startup ]]; then
            run_startup
            continue
        fi
        start_broker
        if [[ "$w" == consume* ]]; then
            echo "== consume: prefill (not measured)"
            "$SKIFF_BENCH" produce --bootstrap "$KAFKA_ADDR" --topic c100 --partitions 4 \
                --message-bytes 100 --messages 20000000 --api batch --producers 2 | grep -v "^{"
        fi
        for i in $(seq "$RUNS"); do
            case "$w" in
                produce) bench "$w #$i" produce --topic "p100-$i" --partitions 4 --message-bytes 100 --messages 20000000 --acks 1 --producers 2 --api message ;;
                produce-batch) bench "$w #$i" produce --topic "p100b-$i" --partitions 4 --message-bytes 100 --messages 20000000 --acks 1 --producers 2 --api batch ;;
                produce-lz4) bench "$w #$i" produce --topic "p100lz4-$i" --partitions 4 --message-bytes 100 --messages 20000000 --acks 1 --compression lz4 --producers 2 --api message ;;
                produce-lz4-batch) bench "$w #$i" produce --topic "p100lz4b-$i" --partitions 4 --message-bytes 100 --messages 20000000 --acks 1 --compression lz4 --producers 2 --api batch ;;
                produce-1k) bench "$w #$i" produce --topic "p1k-$i" --partitions 4 --message-bytes 1024 --messages 5000000 --acks 1 --producers 2 --api message ;;
                produce-1k-batch) bench "$w #$i" produce --topic "p1kb-$i" --partitions 4 --message-bytes 1024 --messages 5000000 --acks 1 --producers 2 --api batch ;;
                consume) bench "$w #$i" consume --topic c100 --messages 20000000 --consumers 2 --api message ;;
                consume-batch) bench "$w #$i" consume --topic c100 --messages 20000000 --consumers 4 --api batch ;;
                latency) bench "$w #$i" latency --topic "lat-$i" --partitions 4 --message-bytes 100 --rate 10000 --duration-secs 30 --warmup-secs 2 --acks 1 --linger-ms 0 ;;
                latency-linger5) bench "$w #$i" latency --topic "lat5-$i" --partitions 4 --message-bytes 100 --rate 10000 --duration-secs 30 --warmup-secs 2 --acks 1 --linger-ms 5 ;;
                *) echo "unknown measurement '$w'" >&2; exit 2 ;;
            esac
        done
        echo "broker VmRSS after $w: $(rss_kb) kB"
        stop_broker
    done
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)"
echo "broker: $SKIFF"
echo "bench:  $SKIFF_BENCH"
run_all "$@"
