#!/usr/bin/env bash
# Apache Kafka 4.1.2 and Skiff side by side on this machine, with the same clients.
#
#   bash scripts/compare-kafka.sh                 # everything (estimated 15-20 min on 2 cores)
#   bash scripts/compare-kafka.sh --quick         # short runs, to check that it works (~4 min)
#   bash scripts/compare-kafka.sh latency consume # a subset (measure or group names below)
#
# Options:
#   --quick               small message counts and 5 s latency runs (smoke test, not figures)
#   --runs N              repeat every measure N times (default 1); odd runs go Kafka first,
#                         even runs Skiff first, so neither always follows the other's writeback
#   --skiff PATH          broker binary (default target/release/skiff; built if missing)
#   --skiff-bench PATH    benchmark binary (default target/release/skiff-bench; built if missing)
#   --kafka-heap SIZE     Kafka's JVM heap, -Xms and -Xmx (default 1g, kafka-server-start.sh's)
#   --results DIR         keep the results (summary.md, results.jsonl, client outputs, broker
#                         logs) in DIR; otherwise only the summary is printed
#
# Measures (default: all, in this order); each group runs on a freshly started broker:
#   produce-100 produce-100-batch produce-1k produce-1k-batch   skiff-bench produce, acks=1
#   java-produce-100 java-produce-1k                            Kafka's ProducerPerformance
#   consume: consume consume-batch java-consume                 after a prefill (not measured)
#   latency: latency latency-linger5 java-latency               10 k msg/s
#
# How: Apache Kafka is one combined KRaft node (process.roles=broker,controller) on
# 127.0.0.1:29092 (controller 127.0.0.1:29093), run from the Maven artifacts kafka_2.13 and
# kafka-tools 4.1.2 (scripts/compare-kafka/pom.xml; `mvn validate` resolves them into ~/.m2 and
# writes their classpath), storage formatted with `kafka.tools.StorageTool format --standalone`,
# started as kafka-server-start.sh would (`kafka.Kafka server.properties`, G1, -Xms1g -Xmx1g) with
# the settings of Kafka's shipped config/server.properties (internal topics at RF 1, otherwise
# Kafka's defaults). Skiff is `skiff serve` on 127.0.0.1:9092 (9644, 9093, 7946), or on
# 39092/39644/39093/39946 if any of those is taken. Only one broker runs at a time: for each group
# the script starts Kafka on an empty log dir, runs the group's measures, stops it and deletes its
# data, then does the same with Skiff. Every client command is the same for both brokers except
# the bootstrap address; topics have 4 partitions and RF 1 on both.
#
# For every client run it records the broker's CPU time (utime + stime of the broker process,
# all threads, from /proc/PID/stat before and after; the JVM for Kafka), its VmRSS after the run
# and its VmHWM during it (reset through /proc/PID/clear_refs first), the client's CPU time, and
# CPU used by everything else on the machine (from /proc/stat; non-zero means disturbed figures).
# At the end it prints one markdown table with both brokers side by side.
#
# Needs bash, python3, java (17+) and mvn; the first run may download the Kafka artifacts from
# Maven Central. Everything (data, logs) lives in one temporary directory, removed at the end,
# also on failure or Ctrl-C, after both brokers and any running client are stopped.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HERE="$ROOT/scripts/compare-kafka"
HELPER="$HERE/helper.py"

QUICK=0
RUNS=1
SKIFF="${SKIFF:-}"
SKIFF_BENCH="${SKIFF_BENCH:-}"
KAFKA_HEAP=1g
RESULTS_DIR=""
WANTED=()

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --runs) RUNS="$2"; shift ;;
        --skiff) SKIFF="$2"; shift ;;
        --skiff-bench) SKIFF_BENCH="$2"; shift ;;
        --kafka-heap) KAFKA_HEAP="$2"; shift ;;
        --results) RESULTS_DIR="$2"; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
        *) WANTED+=("$1") ;;
    esac
    shift
done
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || { echo "--runs needs a positive number" >&2; exit 2; }

# --- sizes -----------------------------------------------------------------------------------
# Full: the message counts and durations of docs/benchmarks.md ("Results and commands").
if [[ $QUICK == 1 ]]; then
    N100=200000 N1K=50000 NCONSUME=200000 LAT_SECS=5 LAT_WARMUP=1
else
    N100=20000000 N1K=5000000 NCONSUME=20000000 LAT_SECS=30 LAT_WARMUP=2
fi
LAT_RATE=10000

# group:measure,measure,... in running order
GROUPS_ALL=(
    "produce-100:produce-100"
    "produce-100-batch:produce-100-batch"
    "produce-1k:produce-1k"
    "produce-1k-batch:produce-1k-batch"
    "java-produce-100:java-produce-100"
    "java-produce-1k:java-produce-1k"
    "consume:consume,consume-batch,java-consume"
    "latency:latency,latency-linger5,java-latency"
)

# Selected groups, each with only the selected measures.
GROUPS_RUN=()
for g in "${GROUPS_ALL[@]}"; do
    name="${g%%:*}"
    IFS=, read -r -a ms <<<"${g#*:}"
    keep=()
    for m in "${ms[@]}"; do
        if [[ ${#WANTED[@]} -eq 0 ]]; then keep+=("$m"); continue; fi
        for w in "${WANTED[@]}"; do
            if [[ "$w" == "$m" || "$w" == "$name" ]]; then keep+=("$m"); break; fi
        done
    done
    if [[ ${#keep[@]} -gt 0 ]]; then GROUPS_RUN+=("$name:$(IFS=,; echo "${keep[*]}")"); fi
done
for w in "${WANTED[@]}"; do
    known=0
    for g in "${GROUPS_ALL[@]}"; do
        [[ "$w" == "${g%%:*}" || ",${g#*:}," == *",$w,"* ]] && known=1
    done
    [[ $known == 1 ]] || { echo "unknown measure '$w' (see --help)" >&2; exit 2; }
done

# --- tools -----------------------------------------------------------------------------------
for tool in python3 java mvn ss; do
    command -v "$tool" >/dev/null || { echo "$tool not found (needs bash, python3, java, mvn, ss)" >&2; exit 2; }
done
if [[ -z "$SKIFF" || -z "$SKIFF_BENCH" ]]; then
    TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
    SKIFF="${SKIFF:-$TARGET/release/skiff}"
    SKIFF_BENCH="${SKIFF_BENCH:-$TARGET/release/skiff-bench}"
    if [[ ! -x "$SKIFF" || ! -x "$SKIFF_BENCH" ]]; then
        echo "== building release binaries (cargo build --release -p skiff -p skiff-bench)"
        (cd "$ROOT" && cargo build --release -p skiff -p skiff-bench)
    fi
fi
for b in "$SKIFF" "$SKIFF_BENCH"; do [[ -x "$b" ]] || { echo "not executable: $b" >&2; exit 2; }; done

# Kafka 4.1.2 from Maven: offline from ~/.m2 if it is all there, else through Maven Central.
if [[ ! -s "$HERE/target/classpath.txt" || "$HERE/pom.xml" -nt "$HERE/target/classpath.txt" ]]; then
    echo "== resolving Apache Kafka 4.1.2 (scripts/compare-kafka/pom.xml)"
    (cd "$HERE" && { mvn -B -q -o validate 2>/dev/null || mvn -B -q validate; })
fi
KAFKA_CP="$(cat "$HERE/target/classpath.txt")"
# kafka-server-start.sh's heap and kafka-run-class.sh's JVM options
KAFKA_JVM=(-Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20
    -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15
    -Djava.awt.headless=true)
# kafka-producer-perf-test.sh / kafka-consumer-perf-test.sh: the same options with -Xmx512M
TOOL_JVM=(-Xmx512m -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
    -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 -Djava.awt.headless=true
    -Dorg.slf4j.simpleLogger.defaultLogLevel=warn)

# --- addresses: loopback only ----------------------------------------------------------------
tcp_taken() { ss -Hltn | awk '{print $4}' | grep -Eq "[:.]$1\$"; }
udp_taken() { ss -Hlun | awk '{print $4}' | grep -Eq "[:.]$1\$"; }
KAFKA_ADDR=127.0.0.1:29092
KAFKA_CONTROLLER=127.0.0.1:29093
for p in 29092 29093; do
    tcp_taken $p && { echo "port $p is taken; Kafka needs 29092 and 29093 on 127.0.0.1" >&2; exit 2; }
done
if tcp_taken 9092 || tcp_taken 9644 || tcp_taken 9093 || udp_taken 7946; then
    SKIFF_PORTS=(39092 39644 39093 39946)
else
    SKIFF_PORTS=(9092 9644 9093 7946)
fi
for p in "${SKIFF_PORTS[@]:0:3}"; do tcp_taken "$p" && { echo "port $p is taken" >&2; exit 2; }; done
udp_taken "${SKIFF_PORTS[3]}" && { echo "udp port ${SKIFF_PORTS[3]} is taken" >&2; exit 2; }
SKIFF_ADDR="127.0.0.1:${SKIFF_PORTS[0]}"

# --- state and cleanup -----------------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/compare-kafka.XXXXXX")"
RESULTS="$WORK/results.jsonl"
mkdir -p "$WORK/out" "$WORK/logs"
: >"$RESULTS"
BROKER_PID=""
BROKER=""
CLIENT_PID=""
HZ="$(getconf CLK_TCK)"

stop_broker() {
    local pid="$BROKER_PID"
    [[ -n "$pid" ]] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        # Kafka's controlled shutdown takes a few seconds
        for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            echo "   $BROKER did not stop within 60 s: SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
    BROKER_PID=""
    rm -rf "$WORK/$BROKER"
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n "$CLIENT_PID" ]] && kill -0 "$CLIENT_PID" 2>/dev/null; then
        kill -TERM "$CLIENT_PID" 2>/dev/null || true
        wait "$CLIENT_PID" 2>/dev/null || true
    fi
    stop_broker
    if [[ -n "$RESULTS_DIR" && -d "$WORK" ]]; then
        mkdir -p "$RESULTS_DIR"
        cp -r "$WORK/results.jsonl" "$WORK/out" "$WORK/logs" "$RESULTS_DIR/" 2>/dev/null || true
        [[ -f "$WORK/summary.md" ]] && cp "$WORK/summary.md" "$RESULTS_DIR/"
        echo "results kept in $RESULTS_DIR"
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT
trap 'echo "terminated" >&2; exit 143' TERM

proc_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }      # utime + stime
children_ticks() { sed 's/^.*) //' "/proc/$$/stat" | awk '{print $14 + $15}'; }   # cutime + cstime
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status" 2>/dev/null || true; }

# --- brokers ---------------------------------------------------------------------------------
START_MS=0
IDLE_RSS=""

start_kafka() {
    local dir="$WORK/kafka" log="$WORK/logs/kafka-$1.log"
    rm -rf "$dir"
    mkdir -p "$dir/data"
    # Kafka's config/server.properties (4.1) with loopback addresses and this log dir
    cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=$KAFKA_CONTROLLER
listeners=PLAINTEXT://$KAFKA_ADDR,CONTROLLER://$KAFKA_CONTROLLER
advertised.listeners=PLAINTEXT://$KAFKA_ADDR,CONTROLLER://$KAFKA_CONTROLLER
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
num.network.threads=3
num.io.threads=8
socket.send.buffer.bytes=102400
socket.receive.buffer.bytes=102400
socket.request.max.bytes=104857600
log.dirs=$dir/data
num.partitions=1
num.recovery.threads.per.data.dir=1
offsets.topic.replication.factor=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
log.retention.hours=168
log.retention.check.interval.ms=300000
log.segment.bytes=1073741824
EOF
    local cluster_id
    cluster_id="$(python3 -c 'import base64, uuid
while True:
    s = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    if not s.startswith("-"): break
print(s)')"
    java -Xmx256m -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -cp "$KAFKA_CP" kafka.tools.StorageTool \
        format --standalone -t "$cluster_id" -c "$dir/server.properties" >"$WORK/logs/kafka-format-$1.log" 2>&1 ||
        { cat "$WORK/logs/kafka-format-$1.log" >&2; return 1; }
    BROKER=kafka
    (cd "$dir" && exec java "${KAFKA_JVM[@]}" -Dorg.slf4j.simpleLogger.defaultLogLevel=info \
        -Dorg.slf4j.simpleLogger.showDateTime=true -cp "$KAFKA_CP" kafka.Kafka server.properties) >"$log" 2>&1 &
    BROKER_PID=$!
    START_MS="$(python3 "$HELPER" ready "$KAFKA_ADDR" "$BROKER_PID" 180 "$log" "Kafka Server started")" ||
        { tail -20 "$log" >&2; return 1; }
}

start_skiff() {
    local dir="$WORK/skiff" log="$WORK/logs/skiff-$1.log"
    rm -rf "$dir"
    mkdir -p "$dir"
    BROKER=skiff
    "$SKIFF" serve --data-dir "$dir/data" --kafka-addr "$SKIFF_ADDR" \
        --http-addr "127.0.0.1:${SKIFF_PORTS[1]}" --raft-addr "127.0.0.1:${SKIFF_PORTS[2]}" \
        --gossip-addr "127.0.0.1:${SKIFF_PORTS[3]}" >"$log" 2>&1 &
    BROKER_PID=$!
    START_MS="$(python3 "$HELPER" ready "$SKIFF_ADDR" "$BROKER_PID" 60)" || { tail -20 "$log" >&2; return 1; }
}

# --- clients ---------------------------------------------------------------------------------
JAVA_TOOL=(java "${TOOL_JVM[@]}" -cp "$KAFKA_CP")

create_topic() {   # bootstrap topic: 4 partitions, RF 1, with Kafka's TopicCommand (not measured)
    "${JAVA_TOOL[@]}" org.apache.kafka.tools.TopicCommand --bootstrap-server "$1" --create --topic "$2" \
        --partitions 4 --replication-factor 1 >"$WORK/out/topic-$2-$BROKER.txt" 2>&1 ||
        { cat "$WORK/out/topic-$2-$BROKER.txt" >&2; return 1; }
}

# Sets LABEL, TOOL, BYTES, EXPECTED and CMD for a measure; SETUP is run first, unmeasured.
define_measure() {
    local m="$1" bs="$2" run="$3"
    SETUP=()
    local sb=("$SKIFF_BENCH")
    case "$m" in
        produce-100|produce-100-batch|produce-1k|produce-1k-batch)
            local api=message bytes=100 n=$N100 topic="p100-$run"
            [[ $m == *-batch ]] && api=batch && topic="${topic/p100/p100b}"
            if [[ $m == produce-1k* ]]; then bytes=1024 n=$N1K topic="${topic/p100/p1k}"; fi
            LABEL="skiff-bench produce $([[ $bytes == 100 ]] && echo "100 B" || echo "1 KiB"), $api API"
            TOOL=skiff-bench BYTES=$bytes EXPECTED=$n
            CMD=("${sb[@]}" produce --bootstrap "$bs" --topic "$topic" --partitions 4 --message-bytes "$bytes"
                --messages "$n" --acks 1 --producers 2 --api "$api") ;;
        java-produce-100|java-produce-1k)
            local bytes=100 n=$N100
            [[ $m == *1k ]] && bytes=1024 n=$N1K
            LABEL="ProducerPerformance $([[ $bytes == 100 ]] && echo "100 B" || echo "1 KiB")"
            TOOL=producer-perf BYTES=$bytes EXPECTED=$n
            SETUP=(create_topic "$bs" "jp$bytes-$run")
            # skiff-bench's producer settings where the Java client has them: acks=1, linger 5 ms,
            # batches up to 1 MB, no compression
            CMD=("${JAVA_TOOL[@]}" org.apache.kafka.tools.ProducerPerformance --topic "jp$bytes-$run" --num-records "$n"
                --record-size "$bytes" --throughput -1 --producer-props "bootstrap.servers=$bs" acks=1
                linger.ms=5 batch.size=1000000 compression.type=none) ;;
        consume|consume-batch)
            local api=message consumers=2
            [[ $m == consume-batch ]] && api=batch consumers=4
            LABEL="skiff-bench consume 100 B, $api API, $consumers consumers"
            TOOL=skiff-bench BYTES=100 EXPECTED=$NCONSUME
            CMD=("${sb[@]}" consume --bootstrap "$bs" --topic c100 --messages "$NCONSUME" --consumers "$consumers"
                --api "$api") ;;
        java-consume)
            LABEL="ConsumerPerformance 100 B, 1 consumer"
            TOOL=consumer-perf BYTES=100 EXPECTED=$NCONSUME
            # 4 MiB per partition fetch, as skiff-bench's max.partition.fetch.bytes
            CMD=("${JAVA_TOOL[@]}" org.apache.kafka.tools.ConsumerPerformance --bootstrap-server "$bs" --topic c100
                --messages "$NCONSUME" --fetch-size 4194304 --group "perf-$run-$RANDOM" --timeout 30000) ;;
        latency|latency-linger5)
            local linger=0 topic="lat-$run"
            [[ $m == latency-linger5 ]] && linger=5 topic="lat5-$run"
            LABEL="skiff-bench latency 10 k msg/s, linger.ms=$linger"
            TOOL=skiff-bench BYTES=100 EXPECTED=0
            CMD=("${sb[@]}" latency --bootstrap "$bs" --topic "$topic" --partitions 4 --message-bytes 100
                --rate "$LAT_RATE" --duration-secs "$LAT_SECS" --warmup-secs "$LAT_WARMUP" --acks 1
                --linger-ms "$linger") ;;
        java-latency)
            local n=$((LAT_RATE * LAT_SECS))
            LABEL="ProducerPerformance 10 k msg/s, linger.ms=0 (send to ack)"
            TOOL=producer-perf BYTES=100 EXPECTED=$n
            SETUP=(create_topic "$bs" "jlat-$run")
            CMD=("${JAVA_TOOL[@]}" org.apache.kafka.tools.ProducerPerformance --topic "jlat-$run" --num-records "$n"
                --record-size 100 --throughput "$LAT_RATE" --producer-props "bootstrap.servers=$bs" acks=1
                linger.ms=0 compression.type=none) ;;
        *) echo "unknown measure $m" >&2; return 1 ;;
    esac
}

run_measure() {
    local m="$1" bs="$2" run="$3"
    define_measure "$m" "$bs" "$run"
    if [[ ${#SETUP[@]} -gt 0 ]]; then "${SETUP[@]}"; fi
    local out="$WORK/out/$m-$BROKER-$run.txt"
    local line="${CMD[*]}"
    echo "-- $BROKER: $m: ${line//"$KAFKA_CP"/\$KAFKA_CP}" >"$out"
    echo "-- $BROKER #$run $m"
    { echo 5 >"/proc/$BROKER_PID/clear_refs"; } 2>/dev/null || true   # VmHWM := VmRSS
    local b0 s0 c0 t0 b1 s1 c1 t1 rc=0
    b0="$(proc_ticks "$BROKER_PID")" s0="$(busy_ticks)" c0="$(children_ticks)" t0=$EPOCHREALTIME
    "${CMD[@]}" >>"$out" 2>&1 &
    CLIENT_PID=$!
    wait "$CLIENT_PID" || rc=$?
    CLIENT_PID=""
    t1=$EPOCHREALTIME
    kill -0 "$BROKER_PID" 2>/dev/null || { tail -20 "$out" >&2; echo "$BROKER exited during $m" >&2; return 1; }
    b1="$(proc_ticks "$BROKER_PID")" s1="$(busy_ticks)" c1="$(children_ticks)"
    local rss hwm
    rss="$(status_kb "$BROKER_PID" VmRSS)" hwm="$(status_kb "$BROKER_PID" VmHWM)"
    local broker_s client_s other_s wall_s
    read -r broker_s client_s other_s wall_s < <(awk -v b=$((b1 - b0)) -v c=$((c1 - c0)) -v s=$((s1 - s0)) \
        -v hz="$HZ" -v t0="$t0" -v t1="$t1" \
        'BEGIN { o = (s - b - c) / hz; if (o < 0) o = 0; printf "%.3f %.3f %.3f %.3f\n", b / hz, c / hz, o, t1 - t0 }')
    if [[ $rc != 0 ]]; then
        echo "   client exited with status $rc; last lines:" >&2
        tail -5 "$out" | sed 's/^/   | /' >&2
    fi
    echo "   $(grep -v '^{' "$out" | grep -v '^-- ' | tail -2 | tr '\n' ' ' | cut -c1-300)"
    echo -n "   "
    python3 "$HELPER" record "$RESULTS" measure="$m" label="$LABEL" broker="$BROKER" run="$run" tool="$TOOL" \
        message_bytes="$BYTES" expected="$EXPECTED" rc="$rc" broker_cpu_s="$broker_s" client_cpu_s="$client_s" \
        other_cpu_s="$other_s" wall_s="$wall_s" rss_kb="$rss" hwm_kb="$hwm" idle_rss_kb="$IDLE_RSS" \
        start_ms="$START_MS" <"$out"
}

# prepares a group on the running broker (not measured)
setup_group() {
    local group="$1" bs="$2" run="$3"
    if [[ $group == consume ]]; then
        echo "-- $BROKER #$run consume: prefill $NCONSUME messages of 100 B (not measured)"
        "$SKIFF_BENCH" produce --bootstrap "$bs" --topic c100 --partitions 4 --message-bytes 100 \
            --messages "$NCONSUME" --api batch --producers 2 >"$WORK/out/prefill-$BROKER-$run.txt" 2>&1 ||
            { tail -5 "$WORK/out/prefill-$BROKER-$run.txt" >&2; return 1; }
    fi
}

run_group() {
    local broker="$1" group="$2" measures="$3" run="$4" bs
    "start_$broker" "$group-$run"
    [[ $broker == kafka ]] && bs="$KAFKA_ADDR" || bs="$SKIFF_ADDR"
    sleep 2
    IDLE_RSS="$(status_kb "$BROKER_PID" VmRSS)"
    echo "== $broker ($group, run $run): pid $BROKER_PID serving after $START_MS ms, VmRSS $IDLE_RSS kB 2 s later"
    setup_group "$group" "$bs" "$run"
    local m ms
    IFS=, read -r -a ms <<<"$measures"
    for m in "${ms[@]}"; do run_measure "$m" "$bs" "$run"; done
    stop_broker
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "kafka:  Apache Kafka 4.1.2 (Maven), java $(java -version 2>&1 | head -1 | cut -d'"' -f2), heap $KAFKA_HEAP, on $KAFKA_ADDR"
echo "skiff:  $SKIFF on $SKIFF_ADDR"
echo "client: $SKIFF_BENCH; Kafka's ProducerPerformance / ConsumerPerformance"
echo "mode:   $([[ $QUICK == 1 ]] && echo "quick (smoke test: these are not figures)" || echo full), $RUNS run(s); work dir $WORK"

for run in $(seq "$RUNS"); do
    order=(kafka skiff)
    (( run % 2 == 0 )) && order=(skiff kafka)
    for g in "${GROUPS_RUN[@]}"; do
        for broker in "${order[@]}"; do run_group "$broker" "${g%%:*}" "${g#*:}" "$run"; done
    done
done

echo
echo "## Apache Kafka 4.1.2 vs Skiff ($([[ $QUICK == 1 ]] && echo "quick run: NOT figures" || echo "full run"), $(date -u +%Y-%m-%dT%H:%MZ))"
echo
python3 "$HELPER" table "$RESULTS" | tee "$WORK/summary.md"
