#!/usr/bin/env bash
# Client-compatibility suite: real Kafka clients against Skiff.
#
#   bash tests/compat/install.sh            # once: kcat, Python venv, kafkajs, Java (Maven), Go
#   bash tests/compat/run.sh [SKIFF_BINARY] # default target/debug/skiff (relative to the repo root)
#
# The plain checks (produce/consume, admin, offsets) run against ONE broker (broker 1, which
# bootstraps a one-broker cluster). Then two more brokers join it, and the consumer-group checks
# (*-group-*) run against the 3-broker cluster (bootstrap = all three Kafka addresses), on topics
# with 6 partitions whose leaders are spread over the three brokers; each verifies that the
# group's committed offset on EVERY partition is that partition's end, whichever broker leads it
# (OffsetCommit goes to the group coordinator, which leads only some of them). Last on the
# cluster, kafka-tools-reassign-partitions moves a topic's replicas to other brokers with
# kafka-reassign-partitions, then the *-failover checks produce with acks=all to a replication
# factor 3 topic while run.sh SIGKILLs (at the check's request) the leader of its partition 0,
# restart that broker and read everything back. With these 3-broker checks skipped or filtered
# out, the two extra brokers are not started.
#
# A check asks run.sh to kill or restart a broker through the directory $SKIFF_COMPAT_CTL (one
# per check; run.sh polls it while the check runs): it writes "kill N" or "restart N" to
# <seq>.req, run.sh answers in <seq>.resp ("ok N PID EPOCH" or "error REASON"); see
# compat_common.broker_ctl. A restart uses the broker's flags and data dir and waits until it is
# healthy and every broker's Metadata lists all three; a broker a check leaves killed is
# restarted after it (and the check fails).
#
# Env:
#   SKIFF_COMPAT_GROUPS=0     skip the 3-broker checks (consumer groups, reassignment) and the cluster
#   SKIFF_COMPAT_ONLY=REGEX   run only the checks whose names match (grep -E)
#   SKIFF_COMPAT_KEEP=1       keep the work dir (logs, broker data) instead of removing it
#   SKIFF_COMPAT_TIMEOUT=120  per-check time limit in seconds
#   SKIFF_COMPAT_CLUSTER_TIMEOUT=60  time limit for brokers 2 and 3 to join
#   SKIFF_COMPAT_{KAFKA,HTTP,RAFT,GOSSIP}_ADDR[2|3]  listener addresses of broker 1 [2|3]:
#       Kafka  127.0.0.1:19092 / 19192 / 19292   HTTP   127.0.0.1:19644 / 19744 / 19844
#       Raft   127.0.0.1:19093 / 19193 / 19293   gossip 127.0.0.1:19946 / 19947 / 19948
#
# Prints one line per check (PASS name / FAIL name: reason / SKIP name), the
# output of failing checks with every running broker's log lines written while they ran,
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
# index 0, 1, 2 = broker (node id) 1, 2, 3
KAFKA_ADDRS=("${SKIFF_COMPAT_KAFKA_ADDR:-127.0.0.1:19092}" "${SKIFF_COMPAT_KAFKA_ADDR2:-127.0.0.1:19192}" "${SKIFF_COMPAT_KAFKA_ADDR3:-127.0.0.1:19292}")
HTTP_ADDRS=("${SKIFF_COMPAT_HTTP_ADDR:-127.0.0.1:19644}" "${SKIFF_COMPAT_HTTP_ADDR2:-127.0.0.1:19744}" "${SKIFF_COMPAT_HTTP_ADDR3:-127.0.0.1:19844}")
RAFT_ADDRS=("${SKIFF_COMPAT_RAFT_ADDR:-127.0.0.1:19093}" "${SKIFF_COMPAT_RAFT_ADDR2:-127.0.0.1:19193}" "${SKIFF_COMPAT_RAFT_ADDR3:-127.0.0.1:19293}")
GOSSIP_ADDRS=("${SKIFF_COMPAT_GOSSIP_ADDR:-127.0.0.1:19946}" "${SKIFF_COMPAT_GOSSIP_ADDR2:-127.0.0.1:19947}" "${SKIFF_COMPAT_GOSSIP_ADDR3:-127.0.0.1:19948}")
CHECK_TIMEOUT="${SKIFF_COMPAT_TIMEOUT:-120}"
CLUSTER_TIMEOUT="${SKIFF_COMPAT_CLUSTER_TIMEOUT:-60}"
PY="$HERE/.venv/bin/python"
# the checks that need the 3-broker cluster (the consumer-group checks, the partition
# reassignment and the failovers); they run last
GROUP_CHECKS=(kcat-group-consume confluent-group-subscribe kafka-python-group-consume kafkajs-group-consume
    java-group-consume java-group-admin kafka-tools-consumer-groups kafka-tools-verifiable-consumer
    franz-go-group-consume sarama-group-consume kafka-tools-reassign-partitions kafka-tools-leader-election
    kcat-failover confluent-failover kafka-python-failover kafkajs-failover)

# Known broker gaps: checks that fail because Skiff lacks what they test. Each still runs; a
# failure prints "SKIP name: known broker gap: <reason> (<its failure>)" and counts as skipped,
# and a pass prints FAIL, so that the entry is removed once the broker has the feature.
declare -A KNOWN_FAILURES=()

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

# fail_start NAME REASON: a start-up failure counted as a failed check
fail_start() {
    echo "FAIL $1: $2"
    failed=$((failed + 1)) failed_names+=("$1")
}

if [ ! -x "$SKIFF" ]; then
    fail_start broker-start "skiff binary not found or not executable: $SKIFF"
    summary
    exit 1
fi

selected() { [ -z "${SKIFF_COMPAT_ONLY:-}" ] || grep -Eq -- "$SKIFF_COMPAT_ONLY" <<<"$1"; }

# the cluster is started only if some group check is going to run
want_cluster=0
if [ "${SKIFF_COMPAT_GROUPS:-1}" != 0 ]; then
    for name in "${GROUP_CHECKS[@]}"; do
        if selected "$name"; then want_cluster=1; fi
    done
fi

# ---- brokers -----------------------------------------------------------------

DATA="$(mktemp -d /tmp/skiff-compat-data.XXXXXX)" # broker N's data dir: $DATA/node-N
WORK="$(mktemp -d /tmp/skiff-compat-work.XXXXXX)"
BROKER_PIDS=() # of the brokers started so far, by index
BROKER_LOGS=("$WORK/broker-1.log" "$WORK/broker-2.log" "$WORK/broker-3.log")

cleanup() {
    local rc=$? pid
    # TERM every broker, give them 5 s together, then KILL what is left
    for pid in "${BROKER_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for _ in $(seq 1 50); do
        local alive=0
        for pid in "${BROKER_PIDS[@]}"; do
            if kill -0 "$pid" 2>/dev/null; then alive=1; fi
        done
        [ "$alive" = 1 ] || break
        sleep 0.1
    done
    for pid in "${BROKER_PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
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

# the TCP listeners of every broker this run will start must be free (gossip is UDP: a clash
# there shows up as a broker that does not start)
in_use=0
for i in 0 1 2; do
    [ "$i" = 0 ] || [ "$want_cluster" = 1 ] || continue
    for addr in "${KAFKA_ADDRS[$i]}" "${HTTP_ADDRS[$i]}" "${RAFT_ADDRS[$i]}"; do
        if port_open "$addr"; then
            fail_start broker-start "$addr (broker $((i + 1))) is already in use (a stale broker?)"
            in_use=1
        fi
    done
done
if [ "$in_use" = 1 ]; then
    summary
    exit 1
fi

# start_broker INDEX [restart]: broker INDEX+1 in the background; broker 1 bootstraps, the
# others join broker 1's gossip address. A restart (same flags and data dir) appends to its log.
start_broker() {
    local i=$1 id=$(($1 + 1))
    local args=(serve --node-id "$id" --node-name "compat-$id" --data-dir "$DATA/node-$id"
        --kafka-addr "${KAFKA_ADDRS[$i]}" --http-addr "${HTTP_ADDRS[$i]}"
        --raft-addr "${RAFT_ADDRS[$i]}" --gossip-addr "${GOSSIP_ADDRS[$i]}")
    if [ "$i" != 0 ]; then args+=(--join "${GOSSIP_ADDRS[0]}"); fi
    # without the checks' SKIFF_BOOTSTRAP / SKIFF_DATA_DIR: skiff serve reads them as --bootstrap / --data-dir
    # (and without SKIFF_COMPAT_CTL, set while a check runs)
    if [ "${2:-}" = restart ]; then
        echo "---- run.sh: restarting broker $id: $SKIFF ${args[*]}" >>"${BROKER_LOGS[$i]}"
        env -u SKIFF_BOOTSTRAP -u SKIFF_DATA_DIR -u SKIFF_COMPAT_CTL RUST_LOG="${RUST_LOG:-info}" "$SKIFF" "${args[@]}" \
            >>"${BROKER_LOGS[$i]}" 2>&1 </dev/null &
    else
        echo "starting broker $id: $SKIFF ${args[*]}"
        env -u SKIFF_BOOTSTRAP -u SKIFF_DATA_DIR RUST_LOG="${RUST_LOG:-info}" "$SKIFF" "${args[@]}" \
            >"${BROKER_LOGS[$i]}" 2>&1 </dev/null &
    fi
    BROKER_PIDS[$i]=$!
}

broker_alive() { kill -0 "${BROKER_PIDS[$1]}" 2>/dev/null; }

# note_dead: DEAD="broker N (exit status S), ..." for every started broker that is not running
# (not in a $(...) subshell: only this shell can wait for its brokers)
EXIT_STATUS=()
KILLED_BY=() # index -> the check at whose request run.sh SIGKILLed it (until it is restarted)
DEAD=""
note_dead() {
    local i rc out=()
    for i in "${!BROKER_PIDS[@]}"; do
        if ! broker_alive "$i"; then
            if [ -z "${EXIT_STATUS[$i]:-}" ]; then
                wait "${BROKER_PIDS[$i]}" 2>/dev/null && rc=0 || rc=$?
                EXIT_STATUS[$i]=$rc
            fi
            out+=("broker $((i + 1)) (exit status ${EXIT_STATUS[$i]})")
        fi
    done
    DEAD="$(IFS=,; echo "${out[*]}")"
    DEAD="${DEAD//,/, }"
}

show_log() { # INDEX LINES [FROM_BYTE]: the tail of broker INDEX+1's log
    tail -c "+${3:-1}" "${BROKER_LOGS[$1]}" | tail -n "$2" | sed 's/^/  | /'
}

healthy() { curl -sf --max-time 2 "http://${HTTP_ADDRS[$1]}/health" >/dev/null 2>&1 && port_open "${KAFKA_ADDRS[$1]}"; }

# wait_healthy INDEX SECONDS: /health answers and the Kafka port accepts
wait_healthy() {
    local i=$1 deadline=$((SECONDS + $2))
    while [ "$SECONDS" -lt "$deadline" ]; do
        broker_alive "$i" || return 1
        healthy "$i" && return 0
        sleep 0.2
    done
    return 1
}

start_failed() { # NAME INDEX WHY
    local name=$1 i=$2
    if broker_alive "$i"; then
        fail_start "$name" "$3"
    else
        note_dead
        fail_start "$name" "broker $((i + 1)) exited before becoming healthy (dead: $DEAD)"
    fi
    echo "---- broker $((i + 1)) log (last 100 lines) ----"
    show_log "$i" 100
}

start_broker 0
if ! wait_healthy 0 20; then
    start_failed broker-start 0 "http://${HTTP_ADDRS[0]}/health did not succeed (and ${KAFKA_ADDRS[0]} accept) within 20 s"
    summary
    exit 1
fi
echo "broker 1 up (pid ${BROKER_PIDS[0]}): health $(curl -s --max-time 2 "http://${HTTP_ADDRS[0]}/health" | head -c 200)"

# cluster_view SECONDS [cluster_ready.py options]: "ok" once broker 1's /raft/stats shows voters
# 1, 2, 3 and every broker's Metadata lists brokers 1, 2, 3 (cluster_ready.py), else what is
# missing after SECONDS
cluster_view() {
    local secs=$1
    shift
    (cd "$HERE" && timeout -k 5 $((secs + 15)) "$PY" cluster_ready.py --kafka "$(IFS=,; echo "${KAFKA_ADDRS[*]}")" \
        --http "${HTTP_ADDRS[0]}" --timeout "$secs" --pid "${BROKER_PIDS[0]}" --pid "${BROKER_PIDS[1]}" \
        --pid "${BROKER_PIDS[2]}" "$@" 2>&1 | tail -n 1) || true
}

# start_cluster: brokers 2 and 3 join broker 1; returns non-zero (after a FAIL line) if they
# are not all healthy and registered within CLUSTER_TIMEOUT
start_cluster() {
    local t0=$SECONDS i view
    echo "---- starting brokers 2 and 3 (joining broker 1 at ${GOSSIP_ADDRS[0]}) for the 3-broker checks"
    if [ ! -x "$PY" ]; then
        fail_start cluster-start "$PY missing (run tests/compat/install.sh): needed to see the cluster form"
        return 1
    fi
    start_broker 1
    start_broker 2
    local deadline=$((SECONDS + CLUSTER_TIMEOUT))
    for i in 1 2; do
        if ! wait_healthy "$i" $((deadline - SECONDS)); then
            start_failed cluster-start "$i" "broker $((i + 1)): http://${HTTP_ADDRS[$i]}/health did not succeed (and ${KAFKA_ADDRS[$i]} accept) within ${CLUSTER_TIMEOUT} s"
            return 1
        fi
    done
    # voters 1, 2, 3 in broker 1's /raft/stats and brokers 1, 2, 3 in every broker's Metadata
    local left=$((deadline - SECONDS))
    [ "$left" -gt 5 ] || left=5
    view="$(cluster_view "$left")"
    if [ "$view" != ok ]; then
        note_dead
        fail_start cluster-start "the 3-broker cluster did not form within ${CLUSTER_TIMEOUT} s: ${view:-no answer}${DEAD:+ (dead: $DEAD)}"
        for i in 0 1 2; do
            echo "---- broker $((i + 1)) log (last 40 lines) ----"
            show_log "$i" 40
        done
        return 1
    fi
    echo "3-broker cluster up in $((SECONDS - t0))s (pids ${BROKER_PIDS[*]}): raft voters 1, 2, 3; every broker's Metadata lists brokers 1, 2, 3"
}

# restart_broker INDEX WHY: restarts a broker run.sh killed (same flags and data dir) and waits
# until it is healthy, the 3-broker cluster has formed again and every broker's Metadata gives
# every partition the same leader and ISR (the restarted broker has caught up); on failure
# returns non-zero with RESTART_ERROR set. RESTART_NOTE: a leadership the restarted broker (or
# another) claimed meanwhile that another broker's Metadata gave to another broker.
RESTART_ERROR=""
RESTART_NOTE=""
restart_broker() {
    local i=$1 id=$(($1 + 1)) view claims="$WORK/stale-claims.txt"
    echo "---- run.sh: $2" >>"${BROKER_LOGS[$i]}"
    start_broker "$i" restart
    unset "EXIT_STATUS[$i]" "KILLED_BY[$i]"
    if ! wait_healthy "$i" 30; then
        RESTART_ERROR="broker $id (restarted, pid ${BROKER_PIDS[$i]}) did not become healthy within 30 s"
        broker_alive "$i" || RESTART_ERROR="broker $id exited after its restart"
        return 1
    fi
    rm -f "$claims"
    view="$(cluster_view 30 --agree --restarted "$id" --stale-claims "$claims")"
    RESTART_NOTE="$(cat "$claims" 2>/dev/null || true)"
    if [ "$view" != ok ]; then
        RESTART_ERROR="after restarting broker $id, the 3-broker cluster did not form again (every broker's Metadata the same) within 30 s: ${view:-no answer}"
        return 1
    fi
}

# ctl_answer DIR SEQ TEXT
ctl_answer() { printf '%s\n' "$3" >"$1/$2.resp.tmp" && mv "$1/$2.resp.tmp" "$1/$2.resp"; }

# serve_ctl DIR NAME: answers the requests check NAME wrote to DIR ($SKIFF_COMPAT_CTL):
# "kill N" SIGKILLs broker N ("ok N PID EPOCH", EPOCH when the signal was sent), "restart N"
# restarts broker N after run.sh killed it ("ok N PID EPOCH" once it is back)
CTL_LOG=() # what serve_ctl did during the current check, for its PASS/FAIL line
ctl_log() { local IFS=$'\n'; echo "${CTL_LOG[*]}" | paste -sd '\t' | sed 's/\t/, /g'; }
serve_ctl() {
    local dir=$1 name=$2 req seq action id i pid t rc t0
    for req in "$dir"/*.req; do
        [ -e "$req" ] || continue
        seq="$(basename "$req" .req)"
        [ -e "$dir/$seq.resp" ] && continue
        action="" id=""
        read -r action id <"$req" || true
        if ! [[ "$id" =~ ^[1-3]$ ]] || [ -z "${BROKER_PIDS[$((id - 1))]:-}" ]; then
            ctl_answer "$dir" "$seq" "error no broker '$id' was started"
            continue
        fi
        i=$((id - 1))
        case "$action" in
        kill)
            if ! broker_alive "$i"; then
                ctl_answer "$dir" "$seq" "error broker $id is not running"
                continue
            fi
            pid=${BROKER_PIDS[$i]}
            kill -KILL "$pid"
            t="$(date +%s.%N)"
            wait "$pid" 2>/dev/null && rc=0 || rc=$?
            EXIT_STATUS[$i]=$rc
            KILLED_BY[$i]=$name
            echo "---- run.sh: SIGKILLed broker $id (pid $pid) at $(date -u -d "@$t" +%H:%M:%S.%3N) for $name" >>"${BROKER_LOGS[$i]}"
            CTL_LOG+=("killed broker $id")
            ctl_answer "$dir" "$seq" "ok $id $pid $t"
            ;;
        restart)
            if [ "${KILLED_BY[$i]:-}" != "$name" ]; then
                ctl_answer "$dir" "$seq" "error broker $id was not killed for $name"
                continue
            fi
            t0=$SECONDS
            if restart_broker "$i" "restart requested by $name"; then
                CTL_LOG+=("restarted it ($((SECONDS - t0))s)${RESTART_NOTE:+ (NOTE, while the Metadata of the brokers still differed: $RESTART_NOTE)}")
                ctl_answer "$dir" "$seq" "ok $id ${BROKER_PIDS[$i]} $(date +%s.%N)"
            else
                CTL_LOG+=("restart failed: $RESTART_ERROR")
                ctl_answer "$dir" "$seq" "error $RESTART_ERROR"
            fi
            ;;
        *) ctl_answer "$dir" "$seq" "error unknown request '$action'" ;;
        esac
    done
}

# ---- checks ------------------------------------------------------------------

export SKIFF_BOOTSTRAP="${KAFKA_ADDRS[0]}"
export SKIFF_COMPAT_RUN_ID="r$(date +%s)$$"
export SKIFF_COMPAT_PY="$PY"
export SKIFF_COMPAT_WORK="$WORK"
export SKIFF_DATA_DIR="$DATA" # the checks search it recursively for a topic's segment files
export PYTHONUNBUFFERED=1
export KAFKAJS_NO_PARTITIONER_WARNING=1

# missing_client CLIENT: print a reason and return 0 if a client is not installed
missing_client() {
    case "$1" in
    kcat) command -v kcat >/dev/null || { echo "kcat not installed (run tests/compat/install.sh)"; return 0; } ;;
    py) [ -x "$PY" ] || { echo "$PY missing (run tests/compat/install.sh)"; return 0; } ;;
    node) [ -d "$HERE/node_modules/kafkajs" ] || { echo "kafkajs not installed in tests/compat/node_modules (run tests/compat/install.sh)"; return 0; } ;;
    java) [ -f "$HERE/java/target/classpath.txt" ] && command -v java >/dev/null || { echo "Java checks not built: no tests/compat/java/target/classpath.txt or no java (run tests/compat/install.sh)"; return 0; } ;;
    tools) missing_client java && return 0; missing_client py && return 0 ;;
    go) [ -x "$HERE/go/bin/compat-go" ] || { echo "tests/compat/go/bin/compat-go not built (run tests/compat/install.sh)"; return 0; } ;;
    esac
    return 1
}

# "" until the group checks' cluster was tried; then "up" or "failed"
cluster_state=""

# run_check NAME KIND(plain|groups) CLIENT(kcat|py|node|java|tools|go) COMMAND...
run_check() {
    local name=$1 kind=$2 client=$3
    shift 3
    if ! selected "$name"; then
        return 0
    fi
    if [ "$kind" = groups ] && [ "${SKIFF_COMPAT_GROUPS:-1}" = 0 ]; then
        echo "SKIP $name: skipped (SKIFF_COMPAT_GROUPS=0)"
        skipped=$((skipped + 1))
        return 0
    fi
    if [ "$kind" = groups ] && [ "$cluster_state" != up ]; then
        echo "FAIL $name: not run: the 3-broker cluster did not start (see cluster-start)"
        failed=$((failed + 1)) failed_names+=("$name")
        return 0
    fi
    local why
    if why="$(missing_client "$client")"; then
        echo "FAIL $name: $why"
        failed=$((failed + 1)) failed_names+=("$name")
        return 0
    fi
    note_dead
    if [ -n "$DEAD" ]; then
        echo "FAIL $name: not run: $DEAD died earlier"
        failed=$((failed + 1)) failed_names+=("$name")
        return 0
    fi
    local out="$WORK/$name.out" rc=0 t0=$SECONDS i log_from=() ctl="$WORK/ctl-$name"
    for i in "${!BROKER_PIDS[@]}"; do
        log_from[$i]=$(($(stat -c %s "${BROKER_LOGS[$i]}") + 1))
    done
    mkdir -p "$ctl"
    CTL_LOG=()
    # in the background, so that this shell can kill and restart brokers while it runs
    (cd "$HERE" && SKIFF_COMPAT_CTL="$ctl" exec timeout -k 5 "$CHECK_TIMEOUT" "$@") >"$out" 2>&1 </dev/null &
    local cpid=$!
    while kill -0 "$cpid" 2>/dev/null; do
        serve_ctl "$ctl" "$name"
        sleep 0.1
    done
    wait "$cpid" || rc=$?
    # a broker the check had killed and did not restart: restart it for the checks after it
    local left_killed=""
    for i in "${!KILLED_BY[@]}"; do
        left_killed="$left_killed${left_killed:+, }broker $((i + 1))"
        if restart_broker "$i" "$name left it killed: restarted for the checks after it"; then
            CTL_LOG+=("run.sh restarted broker $((i + 1)) after the check")
        else
            CTL_LOG+=("run.sh could not restart broker $((i + 1)) after the check: $RESTART_ERROR")
        fi
    done
    if [ -n "$left_killed" ] && [ "$rc" = 0 ]; then
        echo "FAIL $name: passed, but left $left_killed killed ($(ctl_log)) ($((SECONDS - t0))s)"
        failed=$((failed + 1)) failed_names+=("$name")
        return 0
    fi
    # the check's "INFO: ..." line and what run.sh did for it, shown on its PASS / FAIL line
    local info
    info="$(grep '^INFO: ' "$out" | tail -n 1 | cut -c 7- || true)"
    if [ "${#CTL_LOG[@]}" -gt 0 ]; then info="${info:+$info; }run.sh: $(ctl_log)"; fi
    info="${info:+ [$info]}"
    local known="${KNOWN_FAILURES[$name]:-}"
    if [ "$rc" = 0 ] && [ -n "$known" ]; then
        echo "FAIL $name: passed, but run.sh lists it in KNOWN_FAILURES ($known): remove that entry ($((SECONDS - t0))s)"
        failed=$((failed + 1)) failed_names+=("$name")
        return 0
    fi
    if [ "$rc" = 0 ]; then
        echo "PASS $name ($((SECONDS - t0))s)$info"
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
    note_dead
    if [ -n "$DEAD" ]; then reason="$reason [died: $DEAD]"; fi
    if [ -n "$known" ] && [ -z "$DEAD" ]; then
        echo "SKIP $name: known broker gap: $known (failed as expected: $reason) ($((SECONDS - t0))s)"
        skipped=$((skipped + 1))
        return 0
    fi
    echo "FAIL $name: $reason ($((SECONDS - t0))s)$info"
    echo "  ---- $name: client output (last 60 lines; client=$client) ----"
    tail -n 60 "$out" | sed 's/^/  | /'
    for i in "${!BROKER_PIDS[@]}"; do
        echo "  ---- $name: broker $((i + 1)) log while it ran (last 40 lines) ----"
        show_log "$i" 40 "${log_from[$i]}"
    done
    failed=$((failed + 1)) failed_names+=("$name")
}

K="$HERE/kcat_check.sh"
CF="$HERE/check_confluent.py"
KP="$HERE/check_kafka_python.py"
KJ="$HERE/kafkajs_check.js"
JC="$HERE/java_check.sh"
KT="$HERE/kafka_tools_check.py"
GO="$HERE/go/bin/compat-go"

# -- plain checks: one broker (broker 1) --

# kcat 1.7.1 / librdkafka 2.0.2: the old-client case
run_check kcat-metadata plain kcat bash "$K" metadata
for codec in none gzip snappy lz4 zstd; do
    run_check "kcat-produce-consume-$codec" plain kcat bash "$K" produce-consume "$codec"
done
run_check kcat-produce-consume-3partitions-lz4 plain kcat bash "$K" produce-consume-3p lz4
run_check kcat-produce-consume-idempotent plain kcat bash "$K" idempotent

# confluent-kafka (recent librdkafka)
for s in confluent-admin-create-list confluent-admin-create-partitions confluent-admin-describe-configs \
    confluent-admin-alter-configs confluent-admin-incremental-alter-configs \
    confluent-produce-consume-none confluent-produce-consume-gzip confluent-produce-consume-snappy \
    confluent-produce-consume-lz4 confluent-produce-consume-zstd \
    confluent-offsets-for-times confluent-admin-delete-topics; do
    run_check "$s" plain py "$PY" "$CF" --step "$s"
done

# kafka-python
for s in kafka-python-admin kafka-python-produce-consume-none kafka-python-produce-consume-gzip \
    kafka-python-produce-consume-snappy kafka-python-produce-consume-lz4 kafka-python-produce-consume-zstd \
    kafka-python-offsets; do
    run_check "$s" plain py "$PY" "$KP" --step "$s"
done

# kafkajs
for s in kafkajs-admin kafkajs-admin-configs kafkajs-produce-none kafkajs-produce-gzip kafkajs-produce-idempotent; do
    run_check "$s" plain node node "$KJ" --step "$s"
done

# the Java client (kafka-clients 4.1)
for s in java-producer java-consumer-assign-seek java-admin-topics java-admin-offsets java-admin-configs; do
    run_check "$s" plain java bash "$JC" --step "$s"
done

# Apache Kafka's CLI tools (4.1)
for s in kafka-tools-topics kafka-tools-console kafka-tools-configs kafka-tools-offsets kafka-tools-log-dirs \
    kafka-tools-verifiable-producer kafka-tools-describe-producers; do
    run_check "$s" plain tools "$PY" "$KT" --step "$s"
done

# franz-go and Sarama
for s in franz-go-admin franz-go-produce sarama-admin sarama-produce; do
    run_check "$s" plain go "$GO" --step "$s"
done

# -- consumer-group checks and partition reassignment: brokers 2 and 3 join, 3-broker cluster --

if [ "$want_cluster" = 1 ]; then
    note_dead
    if [ -n "$DEAD" ]; then
        fail_start cluster-start "not started: $DEAD died earlier"
        cluster_state=failed
    elif start_cluster; then
        cluster_state=up
        SKIFF_BOOTSTRAP="$(IFS=,; echo "${KAFKA_ADDRS[*]}")"
        export SKIFF_COMPAT_EXPECT_BROKERS=3
        echo "group checks: bootstrap $SKIFF_BOOTSTRAP"
    else
        cluster_state=failed
    fi
fi
groups_t0=$SECONDS
run_check kcat-group-consume groups kcat bash "$K" group
run_check confluent-group-subscribe groups py "$PY" "$CF" --step confluent-group-subscribe
run_check kafka-python-group-consume groups py "$PY" "$KP" --step kafka-python-group-consume
run_check kafkajs-group-consume groups node node "$KJ" --step kafkajs-group-consume
run_check java-group-consume groups java bash "$JC" --step java-group-consume
run_check java-group-admin groups java bash "$JC" --step java-group-admin
run_check kafka-tools-consumer-groups groups tools "$PY" "$KT" --step kafka-tools-consumer-groups
run_check kafka-tools-verifiable-consumer groups tools "$PY" "$KT" --step kafka-tools-verifiable-consumer
run_check franz-go-group-consume groups go "$GO" --step franz-go-group-consume
run_check sarama-group-consume groups go "$GO" --step sarama-group-consume
# kafka-reassign-partitions moves a topic's replicas to the other brokers
run_check kafka-tools-reassign-partitions groups tools "$PY" "$KT" --step kafka-tools-reassign-partitions
# kafka-leader-election moves a reordered partition's leadership to its new preferred replica
run_check kafka-tools-leader-election groups tools "$PY" "$KT" --step kafka-tools-leader-election
# failover: each check has run.sh SIGKILL the leader of partition 0 of its replication factor 3
# topic while it produces (acks=all), has it restart that broker, and reads everything back
run_check kcat-failover groups kcat bash "$K" failover
run_check confluent-failover groups py "$PY" "$CF" --step confluent-failover
run_check kafka-python-failover groups py "$PY" "$KP" --step kafka-python-failover
run_check kafkajs-failover groups node node "$KJ" --step kafkajs-failover
if [ "$cluster_state" = up ]; then
    echo "group checks took $((SECONDS - groups_t0))s on the 3-broker cluster"
fi

note_dead
if [ -n "$DEAD" ]; then
    for i in "${!BROKER_PIDS[@]}"; do
        if ! broker_alive "$i"; then
            echo "broker $((i + 1)) died during the run (exit status ${EXIT_STATUS[$i]}); last 60 lines of its log:"
            show_log "$i" 60
        fi
    done
    fail_start brokers-alive "$DEAD died during the run"
fi
summary
[ "$failed" = 0 ]
