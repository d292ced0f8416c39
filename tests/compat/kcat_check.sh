#!/usr/bin/env bash
# kcat 1.7.1 / librdkafka 2.0.2 (Debian) compatibility checks: the old-client case.
#
#   bash kcat_check.sh produce-consume CODEC     # none|gzip|snappy|lz4|zstd, auto-created topic
#   bash kcat_check.sh produce-consume-3p CODEC  # topic pre-created with 3 partitions (confluent admin)
#   bash kcat_check.sh idempotent                # -X enable.idempotence=true
#   bash kcat_check.sh metadata                  # kcat -L
#   bash kcat_check.sh group                     # -G balanced consumer, 6 partitions (needs consumer groups);
#                                                # every partition's committed offset must be its end
#   bash kcat_check.sh failover                  # kcat_failover.py: kcat -P through the SIGKILL of a
#                                                # partition leader (3-broker cluster, run by run.sh)
#
# Env: SKIFF_BOOTSTRAP, SKIFF_COMPAT_RUN_ID, SKIFF_COMPAT_WORK (scratch dir),
#      SKIFF_COMPAT_PY (python with the venv), SKIFF_DATA_DIR (broker data dir).
# On failure the last line is "FAILED: <phase>: <reason>".
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BS="${SKIFF_BOOTSTRAP:-127.0.0.1:19092}"
RUN_ID="${SKIFF_COMPAT_RUN_ID:-$(date +%s)-$$}"
PY="${SKIFF_COMPAT_PY:-$HERE/.venv/bin/python}"
W="$(mktemp -d "${SKIFF_COMPAT_WORK:-/tmp}/kcat.XXXXXX")"
N=100

failed() { echo "FAILED: $*"; exit 1; }
note() { echo "  .. $*"; }
show() { sed 's/^/  | /' "$1" | tail -n "${2:-40}"; }

command -v kcat >/dev/null || failed "setup: kcat not installed (run tests/compat/install.sh)"

# make_input FILE TAG: N lines "key-NNN:value-NNN-TAG-<compressible padding>"
make_input() {
    local pad
    pad="$(printf 'skiff-compat-padding-%.0s' $(seq 1 20))"
    for i in $(seq -w 1 "$N"); do
        echo "key-$i:value-$i-$2-$pad"
    done >"$1"
}

# kcat_produce TOPIC INPUT ERRFILE [kcat args...]
kcat_produce() {
    local topic=$1 input=$2 err=$3
    shift 3
    local rc=0
    kcat -b "$BS" -P -t "$topic" -K: -H "hdr1=v1" -H "trace=id-42" \
        -X message.timeout.ms=30000 -X debug=feature "$@" <"$input" 2>"$err" || rc=$?
    if [ "$rc" != 0 ]; then
        show "$err"
        failed "produce: kcat -P exited $rc: $(grep -v '^%7' "$err" | tail -n 1)"
    fi
    if grep -qi 'delivery failed\|failed to produce\|not compressing\|does not support compression' "$err"; then
        show "$err"
        failed "produce: $(grep -i 'delivery failed\|failed to produce\|not compressing\|does not support compression' "$err" | head -n 1)"
    fi
    # the features librdkafka 2.0.2 enabled/disabled from the broker's ApiVersions
    local feats
    feats="$(grep -o '[A-Z][a-z]*abling feature [A-Za-z0-9]*' "$err" | sort -u | sed 's/abling feature /:/' | tr '\n' ' ' || true)"
    note "librdkafka features: ${feats:-?}"
}

# partitions_of TOPIC: partition count from kcat -L -J (fails if the topic is missing)
partitions_of() {
    local out="$W/metadata.json" rc=0
    kcat -b "$BS" -L -J -t "$1" >"$out" 2>"$W/metadata.err" || rc=$?
    [ "$rc" = 0 ] || { show "$W/metadata.err"; failed "metadata: kcat -L -t $1 exited $rc"; }
    "$PY" - "$out" "$1" <<'EOF'
import json, sys
md = json.load(open(sys.argv[1]))
t = [t for t in md.get("topics", []) if t.get("topic") == sys.argv[2]]
if not t or t[0].get("error"):
    print("FAILED: metadata: topic %s not in kcat -L output: %s" % (sys.argv[2], json.dumps(md)[:500]))
    sys.exit(1)
print(len(t[0]["partitions"]))
EOF
}

# kcat_consume TOPIC OUT
kcat_consume() {
    local rc=0
    kcat -b "$BS" -C -t "$1" -e -o beginning -q -f '%k|%s|%h|%p|%o\n' \
        -X fetch.wait.max.ms=100 >"$2" 2>"$W/consume.err" || rc=$?
    if [ "$rc" != 0 ]; then
        show "$W/consume.err"
        failed "consume: kcat -C exited $rc: $(tail -n 1 "$W/consume.err")"
    fi
}

# produce_consume TOPIC CODEC EXPECT_PARTITIONS(or "") [extra kcat producer args]
produce_consume() {
    local topic=$1 codec=$2 want_parts=$3
    shift 3
    make_input "$W/in.txt" "$codec"
    note "producing $N keyed messages with 2 headers to $topic (-z $codec $*)"
    kcat_produce "$topic" "$W/in.txt" "$W/produce.err" -z "$codec" "$@"
    local parts
    parts="$(partitions_of "$topic")" || { echo "$parts"; exit 1; }
    note "metadata reports $parts partition(s) for $topic"
    if [ -n "$want_parts" ] && [ "$parts" != "$want_parts" ]; then
        failed "metadata: $topic has $parts partitions, expected $want_parts"
    fi
    kcat_consume "$topic" "$W/out.txt"
    note "consumed $(wc -l <"$W/out.txt") lines"
    "$PY" "$HERE/kcat_verify.py" --produced "$W/in.txt" --consumed "$W/out.txt" \
        --headers "hdr1=v1,trace=id-42" --partitions "$parts" --topic "$topic" --codec "$codec"
}

# create_topic TOPIC PARTITIONS: via the confluent-kafka AdminClient
create_topic() {
    "$PY" - "$BS" "$1" "$2" <<'EOF' || exit 1
import sys
from confluent_kafka.admin import AdminClient, NewTopic
bs, t, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
admin = AdminClient({"bootstrap.servers": bs})  # keep a reference: the futures die with the handle
try:
    admin.create_topics([NewTopic(t, n, 1)], request_timeout=30)[t].result(40)
except Exception as e:
    print("FAILED: setup: create %d-partition topic with confluent-kafka AdminClient: %s" % (n, e))
    sys.exit(1)
EOF
}

# leader_spread TOPIC: log the partition leaders (kcat -L -J) and, when run.sh started a
# cluster (SKIFF_COMPAT_EXPECT_BROKERS), fail unless they are spread over its brokers
leader_spread() {
    local out="$W/spread.json" rc=0
    kcat -b "$BS" -L -J -t "$1" >"$out" 2>"$W/spread.err" || rc=$?
    [ "$rc" = 0 ] || { show "$W/spread.err"; failed "metadata: kcat -L -t $1 exited $rc"; }
    (cd "$HERE" && "$PY" - "$out" "$1") <<'EOF' || exit 1
import json, sys
from compat_common import CheckFailed, check_leader_spread
md = json.load(open(sys.argv[1]))
t = [t for t in md.get("topics", []) if t.get("topic") == sys.argv[2]]
try:
    if not t:
        raise CheckFailed("metadata: %s not in kcat -L output" % sys.argv[2])
    check_leader_spread(sys.argv[2], {b["id"] for b in md["brokers"]}, {p["partition"]: p["leader"] for p in t[0]["partitions"]})
except CheckFailed as e:
    print("FAILED: %s" % e)
    sys.exit(1)
EOF
}

# committed_at_end GROUP TOPIC PARTITIONS TOTAL WHAT: the group's committed offset on every
# partition is that partition's end (checked with confluent-kafka's Consumer.committed)
committed_at_end() {
    (cd "$HERE" && "$PY" check_confluent.py --bootstrap "$BS" --verify-group-offsets "$1" --topic "$2" \
        --partitions "$3" --total "$4" --what "$5") || exit 1
}

cmd="${1:-}"
case "$cmd" in
produce-consume)
    codec="${2:?codec}"
    produce_consume "compat-$RUN_ID-kcat-$codec" "$codec" ""
    ;;
produce-consume-3p)
    codec="${2:?codec}"
    topic="compat-$RUN_ID-kcat-3p-$codec"
    create_topic "$topic" 3
    produce_consume "$topic" "$codec" 3
    ;;
idempotent)
    produce_consume "compat-$RUN_ID-kcat-idempotent" none "" -X enable.idempotence=true
    ;;
metadata)
    topic="compat-$RUN_ID-kcat-metadata"
    make_input "$W/in.txt" meta
    kcat_produce "$topic" "$W/in.txt" "$W/produce.err"
    rc=0
    kcat -b "$BS" -L >"$W/list.txt" 2>"$W/list.err" || rc=$?
    show "$W/list.txt" 20
    [ "$rc" = 0 ] || { show "$W/list.err"; failed "metadata: kcat -L exited $rc"; }
    grep -q "topic \"$topic\" with [0-9]* partitions" "$W/list.txt" || failed "metadata: kcat -L does not list topic $topic"
    grep -Eq '^ *[0-9]+ brokers:' "$W/list.txt" || failed "metadata: kcat -L shows no brokers"
    grep -q 'broker .* at .*(controller)' "$W/list.txt" || failed "metadata: no broker is marked (controller) in kcat -L"
    # JSON form, every partition has a leader that is a listed broker
    "$PY" - "$BS" "$topic" <<'EOF' || exit 1
import json, subprocess, sys
bs, t = sys.argv[1:3]
md = json.loads(subprocess.run(["kcat", "-b", bs, "-L", "-J"], check=True, capture_output=True, text=True).stdout)
ids = {b["id"] for b in md["brokers"]}
top = [x for x in md["topics"] if x["topic"] == t]
if not top:
    print("FAILED: metadata: -J listing lacks %s" % t); sys.exit(1)
bad = [p for p in top[0]["partitions"] if p["leader"] not in ids]
if bad:
    print("FAILED: metadata: partitions with a leader that is not a listed broker: %s (brokers %s)" % (bad, ids)); sys.exit(1)
print("  .. kcat -L -J: %d brokers, %d topics, %s has %d partitions" % (len(ids), len(md["topics"]), t, len(top[0]["partitions"])))
EOF
    ;;
group)
    # one balanced consumer (kcat -G commits what it read when it exits), then a new one in
    # the same group; 6 partitions, so on a cluster their leaders are on every broker
    topic="compat-$RUN_ID-kcat-group"
    group="compat-$RUN_ID-kcat-group"
    parts=6
    create_topic "$topic" "$parts"
    leader_spread "$topic"
    make_input "$W/in.txt" group1
    kcat_produce "$topic" "$W/in.txt" "$W/produce.err" -z lz4
    got_parts="$(partitions_of "$topic")" || { echo "$got_parts"; exit 1; }
    [ "$got_parts" = "$parts" ] || failed "metadata: $topic has $got_parts partitions, expected $parts"
    run_group() { # OUT: balanced consumer, exits at end of all assigned partitions
        local rc=0
        kcat -b "$BS" -G "$group" -e -q -f '%k|%s|%h|%p|%o\n' -X auto.offset.reset=earliest \
            -X session.timeout.ms=10000 -X fetch.wait.max.ms=100 "$topic" >"$1" 2>"$W/group.err" || rc=$?
        [ "$rc" = 0 ] || { show "$W/group.err"; failed "group consume: kcat -G exited $rc"; }
        if grep -qi 'commit' "$W/group.err"; then
            note "kcat -G stderr mentions commits:"
            grep -i 'commit' "$W/group.err" | head -n 12 | sed 's/^/  | /'
        fi
    }
    run_group "$W/out1.txt"
    note "first balanced consumer read $(wc -l <"$W/out1.txt") lines"
    "$PY" "$HERE/kcat_verify.py" --produced "$W/in.txt" --consumed "$W/out1.txt" \
        --headers "hdr1=v1,trace=id-42" --partitions "$parts" --topic "$topic" || exit 1
    committed_at_end "$group" "$topic" "$parts" "$N" "commit by kcat -G"
    N=50 make_input "$W/in2.txt" group2
    kcat_produce "$topic" "$W/in2.txt" "$W/produce2.err"
    run_group "$W/out2.txt"
    note "restarted balanced consumer read $(wc -l <"$W/out2.txt") lines"
    "$PY" "$HERE/kcat_verify.py" --produced "$W/in2.txt" --consumed "$W/out2.txt" \
        --headers "hdr1=v1,trace=id-42" --partitions "$parts" --topic "$topic" --no-contiguous ||
        failed "group resume: the restarted consumer did not read exactly the 50 new messages (committed offsets not resumed?)"
    committed_at_end "$group" "$topic" "$parts" "$((N + 50))" "commit by the restarted kcat -G"
    ;;
failover)
    cd "$HERE" && exec "$PY" kcat_failover.py
    ;;
*)
    echo "usage: $0 produce-consume CODEC | produce-consume-3p CODEC | idempotent | metadata | group | failover" >&2
    exit 2
    ;;
esac
echo "ok kcat $*"
