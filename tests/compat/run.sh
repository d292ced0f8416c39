#!/usr/bin/env bash
# Client-compatibility suite: real Kafka clients against one Skiff broker.
#
#   bash tests/compat/install.sh            # once: kcat, Python venv, kafkajs
#   bash tests/compat/run.sh [SKIFF_BINARY] # default target/debug/skiff (relative to the repo root)
#
# Env:
#   SKIFF_COMPAT_GROUPS=0     skip the consumer-group checks
#   SKIFF_COMPAT_ONLY=REGEX   run only the checks whose names match (grep -E)
#   SKIFF_COMPAT_KEEP=1       keep the work dir (logs, broker data) instead of removing it
#   SKIFF_COMPAT_TIMEOUT=120  per-check time limit in seconds
#   SKIFF_COMPAT_KAFKA_ADDR / SKIFF_COMPAT_HTTP_ADDR / SKIFF_COMPAT_RAFT_ADDR  listener addresses
#                                                     (127.0.0.1:19092 / :19644 / :19093)
#
# Prints one line per check (PASS name / FAIL name: reason / SKIP name), the
# output of failing checks with the broker log lines written while they ran,
# and finally "N passed, N failed[, N skipped]". Exits non-zero if any failed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"

SKIFF="${1:-target/debug/skiff}"
if [[ "$SKIFF" != /* ]]; then
    if [ -e "$SKIFF" ] && [ "${1:-}" != "" ]; then
        SKIFF="$(cd "$(dirname "$SKIFF")" && pwd)/$(basename "$SKIFF")"
    else
        SKIFF="$ROOT/$SKIFF"
    fi
fi
KAFKA_ADDR="${SKIFF_COMPAT_KAFKA_ADDR:-127.0.0.1:19092}"
HTTP_ADDR="${SKIFF_COMPAT_HTTP_ADDR:-127.0.0.1:19644}"
RAFT_ADDR="${SKIFF_COMPAT_RAFT_ADDR:-127.0.0.1:19093}"
CHECK_TIMEOUT="${SKIFF_COMPAT_TIMEOUT:-120}"
PY="$HERE/.venv/bin/python"

passed=0
failed=0
skipped=0
failed_names=()

summary() {
    if [ "$failed" -gt 0 ]; then
        echo "failed checks: ${failed_names[*]}"
    fi
    if [ "$skipped" -gt 0 ]; then
        echo "$passed passed, $failed failed, $skipped skipped"
    else
        echo "$passed passed, $failed failed"
    fi
}

if [ ! -x "$SKIFF" ]; then
    echo "FAIL broker-start: skiff binary not found or not executable: $SKIFF"
    failed=1 failed_names=(broker-start)
    summary
    exit 1
fi

# ---- broker ------------------------------------------------------------------

DATA="$(mktemp -d /tmp/skiff-compat-data.XXXXXX)"
WORK="$(mktemp -d /tmp/skiff-compat-work.XXXXXX)"
BROKER_LOG="$WORK/broker.log"
BROKER_PID=""

cleanup() {
    local rc=$?
    if [ -n "$BROKER_PID" ] && kill -0 "$BROKER_PID" 2>/dev/null; then
        kill -TERM "$BROKER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$BROKER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
    fi
    if [ "${SKIFF_COMPAT_KEEP:-}" = 1 ]; then
        echo "kept: broker data $DATA, logs $WORK"
    else
        rm -rf "$DATA" "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_open() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }

for addr in "$KAFKA_ADDR" "$HTTP_ADDR"; do
    if port_open "$addr"; then
        echo "FAIL broker-start: $addr is already in use (a stale broker?)"
        failed=1 failed_names=(broker-start)
        summary
        exit 1
    fi
done

SKIFF_CMD=("$SKIFF")
echo "starting: ${SKIFF_CMD[*]} serve --data-dir $DATA --kafka-addr $KAFKA_ADDR --http-addr $HTTP_ADDR"
RUST_LOG="${RUST_LOG:-info}" "${SKIFF_CMD[@]}" serve --data-dir "$DATA" --kafka-addr "$KAFKA_ADDR" --http-addr "$HTTP_ADDR" \
    --gossip-addr 127.0.0.1:0 --raft-addr "$RAFT_ADDR" \
    >"$BROKER_LOG" 2>&1 </dev/null &
BROKER_PID=$!

broker_alive() { kill -0 "$BROKER_PID" 2>/dev/null; }

started=0
deadline=$((SECONDS + 20))
while [ "$SECONDS" -lt "$deadline" ]; do
    if ! broker_alive; then break; fi
    if curl -sf --max-time 2 "http://$HTTP_ADDR/health" >/dev/null 2>&1 && port_open "$KAFKA_ADDR"; then
        started=1
        break
    fi
    sleep 0.2
done
if [ "$started" != 1 ]; then
    if broker_alive; then
        echo "FAIL broker-start: http://$HTTP_ADDR/health did not succeed (and $KAFKA_ADDR accept) within 20 s"
    else
        wait "$BROKER_PID" && rc=0 || rc=$?
        echo "FAIL broker-start: broker exited with status $rc before becoming healthy"
    fi
    echo "---- broker log (last 100 lines) ----"
    tail -n 100 "$BROKER_LOG" | sed 's/^/  | /'
    failed=1 failed_names=(broker-start)
    summary
    exit 1
fi
echo "broker up (pid $BROKER_PID): health $(curl -s --max-time 2 "http://$HTTP_ADDR/health" | head -c 200)"

# ---- checks ------------------------------------------------------------------

export SKIFF_BOOTSTRAP="$KAFKA_ADDR"
export SKIFF_COMPAT_RUN_ID="r$(date +%s)$$"
export SKIFF_COMPAT_PY="$PY"
export SKIFF_COMPAT_WORK="$WORK"
export SKIFF_DATA_DIR="$DATA"
export PYTHONUNBUFFERED=1
export KAFKAJS_NO_PARTITIONER_WARNING=1

# need TOOL...: print a reason and return 1 if a client is not installed
missing_client() {
    case "$1" in
    kcat) command -v kcat >/dev/null || { echo "kcat not installed (run tests/compat/install.sh)"; return 0; } ;;
    py) [ -x "$PY" ] || { echo "$PY missing (run tests/compat/install.sh)"; return 0; } ;;
    node) [ -d "$HERE/node_modules/kafkajs" ] || { echo "kafkajs not installed in tests/compat/node_modules (run tests/compat/install.sh)"; return 0; } ;;
    esac
    return 1
}

# run_check NAME KIND(plain|groups) CLIENT(kcat|py|node) COMMAND...
run_check() {
    local name=$1 kind=$2 client=$3
    shift 3
    if [ -n "${SKIFF_COMPAT_ONLY:-}" ] && ! grep -Eq -- "$SKIFF_COMPAT_ONLY" <<<"$name"; then
        return 0
    fi
    if [ "$kind" = groups ] && [ "${SKIFF_COMPAT_GROUPS:-1}" = 0 ]; then
        echo "SKIP $name: skipped (SKIFF_COMPAT_GROUPS=0)"
        skipped=$((skipped + 1))
        return 0
    fi
    local why
    if why="$(missing_client "$client")"; then
        echo "FAIL $name: $why"
        failed=$((failed + 1)) failed_names+=("$name")
        return 0
    fi
    if ! broker_alive; then
        echo "FAIL $name: broker is not running (it died earlier)"
        failed=$((failed + 1)) failed_names+=("$name")
        return 0
    fi
    local out="$WORK/$name.out" log_from rc=0 t0=$SECONDS
    log_from=$(($(stat -c %s "$BROKER_LOG") + 1))
    (cd "$HERE" && timeout -k 5 "$CHECK_TIMEOUT" "$@") >"$out" 2>&1 </dev/null || rc=$?
    if [ "$rc" = 0 ]; then
        echo "PASS $name ($((SECONDS - t0))s)"
        passed=$((passed + 1))
        return 0
    fi
    local reason
    reason="$(grep '^FAILED: ' "$out" | tail -n 1 | cut -c 9- || true)"
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        reason="timed out after ${CHECK_TIMEOUT}s${reason:+ (last failure: $reason)}"
    elif [ -z "$reason" ]; then
        reason="exit status $rc: $(grep -v '^\s*$' "$out" | tail -n 1 | cut -c 1-300)"
    fi
    if ! broker_alive; then reason="$reason [broker process died]"; fi
    echo "FAIL $name: $reason"
    echo "  ---- $name: client output (last 60 lines; client=$client) ----"
    tail -n 60 "$out" | sed 's/^/  | /'
    echo "  ---- $name: broker log while it ran (last 40 lines) ----"
    tail -c "+$log_from" "$BROKER_LOG" | tail -n 40 | sed 's/^/  | /'
    failed=$((failed + 1)) failed_names+=("$name")
}

K="$HERE/kcat_check.sh"
CF="$HERE/check_confluent.py"
KP="$HERE/check_kafka_python.py"
KJ="$HERE/kafkajs_check.js"

# kcat 1.7.1 / librdkafka 2.0.2: the old-client case
run_check kcat-metadata plain kcat bash "$K" metadata
for codec in none gzip snappy lz4 zstd; do
    run_check "kcat-produce-consume-$codec" plain kcat bash "$K" produce-consume "$codec"
done
run_check kcat-produce-consume-3partitions-lz4 plain kcat bash "$K" produce-consume-3p lz4
run_check kcat-produce-consume-idempotent plain kcat bash "$K" idempotent
run_check kcat-group-consume groups kcat bash "$K" group

# confluent-kafka (recent librdkafka)
for s in confluent-admin-create-list confluent-admin-create-partitions confluent-admin-describe-configs \
    confluent-admin-alter-configs confluent-admin-incremental-alter-configs \
    confluent-produce-consume-none confluent-produce-consume-gzip confluent-produce-consume-snappy \
    confluent-produce-consume-lz4 confluent-produce-consume-zstd \
    confluent-offsets-for-times confluent-admin-delete-topics; do
    run_check "$s" plain py "$PY" "$CF" --step "$s"
done
run_check confluent-group-subscribe groups py "$PY" "$CF" --step confluent-group-subscribe

# kafka-python
for s in kafka-python-admin kafka-python-produce-consume-none kafka-python-produce-consume-gzip \
    kafka-python-produce-consume-snappy kafka-python-produce-consume-lz4 kafka-python-produce-consume-zstd \
    kafka-python-offsets; do
    run_check "$s" plain py "$PY" "$KP" --step "$s"
done
run_check kafka-python-group-consume groups py "$PY" "$KP" --step kafka-python-group-consume

# kafkajs
for s in kafkajs-admin kafkajs-admin-configs kafkajs-produce-none kafkajs-produce-gzip kafkajs-produce-idempotent; do
    run_check "$s" plain node node "$KJ" --step "$s"
done
run_check kafkajs-group-consume groups node node "$KJ" --step kafkajs-group-consume

if ! broker_alive; then
    echo "broker died during the run; last 60 lines of its log:"
    tail -n 60 "$BROKER_LOG" | sed 's/^/  | /'
fi
summary
[ "$failed" = 0 ]
