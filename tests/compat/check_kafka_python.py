#!/usr/bin/env python3
"""kafka-python (pure Python client, 3.x) compatibility checks.

    python check_kafka_python.py --bootstrap 127.0.0.1:19092 --step kafka-python-admin
    python check_kafka_python.py --list

Consumers use group_id=None with assign() + seek_to_beginning(), except the
*-group-* step.
"""

import logging
import os
import random
import sys
import time

from compat_common import (
    FAILOVER_MIN_ISR,
    FAILOVER_PARTITIONS,
    FAILOVER_REPLICAS,
    FAILURE_CONTEXT,
    GROUP_PARTITIONS,
    CheckFailed,
    Failover,
    check,
    check_leader_spread,
    compare_committed,
    fail,
    log,
    main,
    produce_through_failover,
    step,
    topic_name,
    verify_stored_codec,
    wait_until,
)

import kafka
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError

CLIENT = "kafka-python"

if os.environ.get("SKIFF_COMPAT_DEBUG"):
    logging.basicConfig(level=logging.DEBUG)
else:
    logging.basicConfig(level=logging.WARNING, format="  .. kafka-python log %(levelname)s %(name)s: %(message)s")


class _Repeats(logging.Filter):
    """Shows a log message at most twice (kafka-python logs every retry of a commit)."""

    seen = {}

    def filter(self, record):
        if os.environ.get("SKIFF_COMPAT_DEBUG"):
            return True
        msg = record.getMessage()
        n = self.seen.get(msg, 0) + 1
        self.seen[msg] = n
        if n == 3:
            record.msg, record.args = "(repeated; not shown again) %s", (msg,)
        return n <= 3


for _h in logging.getLogger().handlers:
    _h.addFilter(_Repeats())


class _LastError(logging.Handler):
    """Remembers kafka-python's last ERROR log line for the failure reason."""

    last = ""

    def emit(self, record):
        if record.levelno >= logging.ERROR and not record.getMessage().startswith("Bootstrap failed"):
            _LastError.last = "last kafka-python error log: %s" % record.getMessage()[:300]


logging.getLogger("kafka").addHandler(_LastError())
FAILURE_CONTEXT.append(lambda: _LastError.last)


def admin(bs):
    return KafkaAdminClient(bootstrap_servers=bs, client_id="compat-kafka-python-admin", request_timeout_ms=30000)


def partitions_for(bs, topic):
    c = KafkaConsumer(bootstrap_servers=bs, group_id=None)
    try:
        # topics() fetches fresh metadata for all topics (no auto-create)
        if topic not in c.topics():
            return 0
        return len(c.partitions_for_topic(topic) or ())
    finally:
        c.close()


def create_topic(a, bs, name, partitions):
    try:
        a.create_topics({name: {"num_partitions": partitions, "replication_factor": 1}}, timeout_ms=30000)
    except Exception as e:  # noqa: BLE001
        fail("create_topics(%s, %d partitions): %r" % (name, partitions, e))
    wait_until(lambda: partitions_for(bs, name) == partitions, 20, "metadata to show %s with %d partitions" % (name, partitions))
    log("created %s with %d partitions" % (name, partitions))


def delete_topic_quietly(a, name):
    try:
        a.delete_topics([name], timeout_ms=10000)
    except Exception:  # noqa: BLE001
        pass


def make_messages(n, partitions, seed, base_ts):
    rng = random.Random(seed)
    msgs = []
    for i in range(n):
        key = ("key-%05d" % i).encode() + bytes([0, 255])
        if i % 50 == 7:
            key = None
        value = (("kafka-python message %d; " % i) * (1 + i % 30)).encode() + bytes(rng.getrandbits(8) for _ in range(i % 32))
        if i % 50 == 13:
            value = None
        elif i % 50 == 21:
            value = b""
        headers = [] if i % 4 == 0 else [("seq", str(i).encode()), ("dup", b"a"), ("dup", b"b"), ("bin", bytes([0, 255, i % 256]))]
        msgs.append({"i": i, "key": key, "value": value, "headers": headers, "ts": base_ts + i * 10, "partition": i % partitions})
    return msgs


def produce(bs, topic, msgs, **conf):
    p = KafkaProducer(bootstrap_servers=bs, linger_ms=5, acks="all", request_timeout_ms=30000, **conf)
    try:
        futs = [
            (m, p.send(topic, value=m["value"], key=m["key"], headers=m["headers"], partition=m["partition"], timestamp_ms=m["ts"]))
            for m in msgs
        ]
        p.flush(timeout=60)
        for m, f in futs:
            try:
                md = f.get(timeout=30)
            except Exception as e:  # noqa: BLE001
                fail("produce: message %d failed: %r" % (m["i"], e))
            check(md.partition == m["partition"], "produce: message %d went to partition %d" % (m["i"], md.partition))
            m["offset"] = md.offset
    finally:
        p.close(timeout=10)
    log("produced %d messages to %s (%s)" % (len(msgs), topic, conf))
    return msgs


def consume_assigned(bs, topic, partitions, want, timeout=60):
    c = KafkaConsumer(bootstrap_servers=bs, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=100)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    got = []
    try:
        c.assign(tps)
        c.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        while len(got) < want and time.monotonic() < deadline:
            for _, recs in c.poll(timeout_ms=500, max_records=1000).items():
                got.extend(recs)
        # a little more, to catch duplicates
        for _, recs in c.poll(timeout_ms=300).items():
            got.extend(recs)
        ends = c.end_offsets(tps)
    finally:
        c.close()
    check(len(got) >= want, "consume: got %d/%d messages in %ds" % (len(got), want, timeout))
    return got, ends


def compare(msgs, got):
    check(len(got) == len(msgs), "compare: consumed %d, produced %d" % (len(got), len(msgs)))
    by_off = {(r.partition, r.offset): r for r in got}
    check(len(by_off) == len(got), "compare: some offsets consumed twice")
    for m in msgs:
        r = by_off.get((m["partition"], m["offset"]))
        where = "message %d (p%d@%d)" % (m["i"], m["partition"], m["offset"])
        check(r is not None, "compare: %s not consumed" % where)
        check(r.key == m["key"], "compare: %s key %r != %r" % (where, r.key, m["key"]))
        check(r.value == m["value"], "compare: %s value differs (%r... vs %r...)" % (where, (r.value or b"")[:30], (m["value"] or b"")[:30]))
        check(list(r.headers or []) == m["headers"], "compare: %s headers %r != %r" % (where, r.headers, m["headers"]))
        check(r.timestamp == m["ts"] and r.timestamp_type == 0, "compare: %s timestamp %s (type %s) != %d" % (where, r.timestamp, r.timestamp_type, m["ts"]))
    log("all %d messages identical (key, value, headers, timestamp)" % len(msgs))


@step("kafka-python-admin")
def admin_step(bs):
    a = admin(bs)
    try:
        t = topic_name("kafka-python-admin")
        create_topic(a, bs, t, 3)
        names = a.list_topics()
        check(t in names, "list_topics: %s not in %s" % (t, names))
        try:
            a.create_topics({t: {"num_partitions": 3, "replication_factor": 1}}, timeout_ms=30000)
            fail("create_topics twice succeeded")
        except TopicAlreadyExistsError:
            pass
        except CheckFailed:
            raise
        except Exception as e:  # noqa: BLE001
            fail("create_topics twice: expected TopicAlreadyExistsError, got %r" % e)
        desc = a.describe_topics([t])
        log("describe_topics: %s" % [(d.get("topic") or d.get("name"), len(d.get("partitions", []))) for d in desc])
        check(len(desc) == 1 and len(desc[0].get("partitions", [])) == 3, "describe_topics(%s): %r" % (t, desc))
        try:
            a.delete_topics([t], timeout_ms=30000)
        except Exception as e:  # noqa: BLE001
            fail("delete_topics(%s): %r" % (t, e))
        wait_until(lambda: t not in a.list_topics(), 15, "list_topics to stop showing %s" % t)
        try:
            a.delete_topics([t], timeout_ms=30000)
            fail("delete_topics of a deleted topic succeeded")
        except UnknownTopicOrPartitionError:
            pass
        except CheckFailed:
            raise
        except Exception as e:  # noqa: BLE001
            fail("delete_topics twice: expected UnknownTopicOrPartitionError, got %r" % e)
    finally:
        a.close()


def produce_consume(bs, codec):
    name = "kafka-python-produce-consume-%s" % codec
    a = admin(bs)
    try:
        t = topic_name(name)
        create_topic(a, bs, t, 3)
        msgs = make_messages(500, 3, seed=len(codec), base_ts=int(time.time() * 1000) - 1_000_000)
        produce(bs, t, msgs, compression_type=None if codec == "none" else codec)
        got, ends = consume_assigned(bs, t, 3, len(msgs))
        compare(msgs, got)
        for p in range(3):
            want_end = 1 + max(m["offset"] for m in msgs if m["partition"] == p)
            check(ends[TopicPartition(t, p)] == want_end, "end_offsets p%d = %s, expected %d" % (p, ends[TopicPartition(t, p)], want_end))
        verify_stored_codec(t, 3, codec)
        delete_topic_quietly(a, t)
    finally:
        a.close()


for _codec in ("none", "gzip", "snappy", "lz4", "zstd"):
    step("kafka-python-produce-consume-%s" % _codec)(lambda bs, c=_codec: produce_consume(bs, c))


@step("kafka-python-offsets")
def offsets_step(bs):
    a = admin(bs)
    try:
        t = topic_name("kafka-python-offsets")
        create_topic(a, bs, t, 1)
        base = int(time.time() * 1000) - 500_000
        msgs = [{"i": i, "key": b"k%d" % i, "value": b"v%d" % i, "headers": [], "ts": base + i * 1000, "partition": 0} for i in range(60)]
        # one send+flush per 6 messages: several batches, so the time index matters
        for k in range(0, 60, 6):
            produce(bs, t, msgs[k : k + 6])
        c = KafkaConsumer(bootstrap_servers=bs, group_id=None, enable_auto_commit=False)
        try:
            tp = TopicPartition(t, 0)
            check(c.beginning_offsets([tp])[tp] == 0, "beginning_offsets = %s" % c.beginning_offsets([tp]))
            check(c.end_offsets([tp])[tp] == 60, "end_offsets = %s, expected 60" % c.end_offsets([tp]))
            cases = [(base + 30_000, 30), (base + 29_001, 30), (base - 1, 0), (base + 59_000, 59), (base + 100_000, None)]
            for ts, want in cases:
                r = c.offsets_for_times({tp: ts})[tp]
                got = None if r is None else r.offset
                check(got == want, "offsets_for_times(ts=base%+d ms) = %s, expected %s" % (ts - base, r, want))
                if r is not None:
                    check(r.timestamp == base + want * 1000, "offsets_for_times(ts=base%+d): timestamp %d, expected %d" % (ts - base, r.timestamp, base + want * 1000))
            log("offsets_for_times: %d cases ok" % len(cases))
            c.assign([tp])
            c.seek(tp, 42)
            recs = []
            deadline = time.monotonic() + 20
            while not recs and time.monotonic() < deadline:
                for _, rs in c.poll(timeout_ms=500).items():
                    recs.extend(rs)
            check(recs and recs[0].offset == 42 and recs[0].value == b"v42", "seek(42) then poll: first record %r" % (recs[:1],))
        finally:
            c.close()
        delete_topic_quietly(a, t)
    finally:
        a.close()


def consume_group(bs, topic, group, want, timeout=60, settle=3.0):
    """Subscribe in `group`, read `want` records (then `settle` s more, to catch re-reads)
    and commit synchronously. Returns (records, commit error or None)."""
    c = KafkaConsumer(
        bootstrap_servers=bs,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=10000,
        heartbeat_interval_ms=1000,
        request_timeout_ms=30000,
    )
    got = []
    commit_error = None
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + timeout
        settle_until = None
        while time.monotonic() < deadline:
            for _, recs in c.poll(timeout_ms=500).items():
                got.extend(recs)
            if len(got) >= want and settle_until is None:
                settle_until = time.monotonic() + settle
            if settle_until is not None and time.monotonic() >= settle_until:
                break
        if got:
            try:
                c.commit(timeout_ms=15000)
            except Exception as e:  # noqa: BLE001
                commit_error = repr(e)
                log("KafkaConsumer.commit: %s" % commit_error)
    finally:
        c.close()
    return got, commit_error


def topic_leaders(a, topic):
    """(broker ids, {partition: leader id}) from KafkaAdminClient's Metadata."""
    brokers = {b["broker_id"] for b in a.describe_cluster()["brokers"]}
    (desc,) = a.describe_topics([topic])
    return brokers, {p["partition_index"]: p["leader_id"] for p in desc["partitions"]}


def group_coordinator(a, group):
    """The group's coordinator id, for failure messages only (a private KafkaAdminClient
    call; "?" if it fails)."""
    try:
        return a._manager.run(a._find_coordinator_id, group)
    except Exception:  # noqa: BLE001
        return "?"


def verify_committed(bs, a, topic, group, partitions, what, want_ends):
    """Every partition's committed offset (KafkaConsumer.committed, checked against
    KafkaAdminClient.list_group_offsets) must be its end (KafkaConsumer.end_offsets), which
    must be what was produced to it (want_ends)."""
    c = KafkaConsumer(bootstrap_servers=bs, group_id=group, enable_auto_commit=False, request_timeout_ms=30000)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    committed = {}
    try:
        ends = {tp.partition: off for tp, off in c.end_offsets(tps).items()}
        for tp in tps:
            try:
                committed[tp.partition] = c.committed(tp, timeout_ms=15000)
            except Exception as e:  # noqa: BLE001
                committed[tp.partition] = "%r" % (e,)
    finally:
        c.close()
    for p in range(partitions):
        check(ends.get(p) == want_ends[p], "%s: partition %d end offset %s, but %d records were produced to it" % (what, p, ends.get(p), want_ends[p]))
    _, leaders = topic_leaders(a, topic)
    compare_committed(what, committed, ends, leaders, group_coordinator(a, group))
    # the admin API's view (OffsetFetch from KafkaAdminClient) must agree
    try:
        offs = a.list_group_offsets(group)[group]
    except Exception as e:  # noqa: BLE001
        fail("%s: KafkaAdminClient.list_group_offsets(%s): %r" % (what, group, e))
    admin_view = {tp.partition: om.offset for tp, om in offs.items() if tp.topic == topic}
    compare_committed(what + " (KafkaAdminClient.list_group_offsets)", admin_view, ends, leaders)


def produced_ends(msgs, partitions):
    ends = {p: 0 for p in range(partitions)}
    for m in msgs:
        ends[m["partition"]] = max(ends[m["partition"]], m["offset"] + 1)
    return ends


@step("kafka-python-group-consume", groups=True)
def group_step(bs):
    a = admin(bs)
    try:
        n = GROUP_PARTITIONS
        t = topic_name("kafka-python-group-consume")
        g = topic_name("kafka-python-group-consume", "group")
        create_topic(a, bs, t, n)
        check_leader_spread(t, *topic_leaders(a, t))
        msgs = produce(bs, t, make_messages(300, n, seed=9, base_ts=int(time.time() * 1000)))
        got, err = consume_group(bs, t, g, 300)
        check(len(got) == 300, "group consume #1: got %d/300" % len(got))
        compare(msgs, got)
        verify_committed(bs, a, t, g, n, "commit by the first consumer", produced_ends(msgs, n))
        check(err is None, "commit by the first consumer: KafkaConsumer.commit raised %s" % err)
        more = produce(bs, t, make_messages(100, n, seed=10, base_ts=int(time.time() * 1000)))
        got2, err2 = consume_group(bs, t, g, 100)
        check(len(got2) == 100, "group consume #2 (resume after commit): got %d, expected exactly the 100 new messages" % len(got2))
        compare(more, got2)
        verify_committed(bs, a, t, g, n, "commit by the resumed consumer", produced_ends(msgs + more, n))
        check(err2 is None, "commit by the resumed consumer: KafkaConsumer.commit raised %s" % err2)
        delete_topic_quietly(a, t)
    finally:
        a.close()


# --- failover: the leader of partition 0 is SIGKILLed while producing ----------


def partition_view(a, topic):
    """(broker ids, {partition: (leader, replicas, isr)}) from KafkaAdminClient's Metadata."""
    brokers = {b["broker_id"] for b in a.describe_cluster()["brokers"]}
    (desc,) = a.describe_topics([topic])
    return brokers, {
        p["partition_index"]: (p["leader_id"], sorted(p["replica_nodes"]), sorted(p["isr_nodes"])) for p in desc["partitions"]
    }


@step("kafka-python-failover", groups=True)
def failover_step(bs):
    a = admin(bs)
    try:
        t = topic_name("kafka-python-failover")
        try:
            a.create_topics(
                {t: {"num_partitions": FAILOVER_PARTITIONS, "replication_factor": FAILOVER_REPLICAS,
                     "configs": {"min.insync.replicas": str(FAILOVER_MIN_ISR)}}},
                timeout_ms=30000,
            )
        except Exception as e:  # noqa: BLE001
            fail("setup: create_topics(%s, %d partitions, replication factor %d): %r" % (t, FAILOVER_PARTITIONS, FAILOVER_REPLICAS, e))

        def ready():
            brokers, parts = partition_view(a, t)
            ok = len(parts) == FAILOVER_PARTITIONS and all(
                l >= 0 and len(r) == FAILOVER_REPLICAS and len(i) == FAILOVER_REPLICAS for l, r, i in parts.values())
            return (brokers, parts) if ok else None

        brokers, parts = wait_until(ready, 20, "%s: a leader and 3 in-sync replicas on every partition" % t)
        log("created %s (min.insync.replicas=%d): brokers %s; partition: (leader, replicas, isr) %s"
            % (t, FAILOVER_MIN_ISR, sorted(brokers), dict(sorted(parts.items()))))

        # kafka-python 3.x: idempotence on by default; acks=all
        fo = Failover(t, idempotent=True, tag="kafka-python")
        p = KafkaProducer(bootstrap_servers=bs, acks="all", enable_idempotence=True, linger_ms=5,
                          delivery_timeout_ms=90000, request_timeout_ms=30000, retry_backoff_ms=100)
        try:
            def send(v, part):
                f = p.send(t, value=v.encode(), partition=part)
                fo.on_sent(v, part)
                f.add_callback(lambda md, v=v: fo.on_ack(v, md.partition, md.offset))
                f.add_errback(lambda e, v=v: fo.on_error(v, repr(e)))

            def flush(timeout):
                try:
                    p.flush(timeout=timeout)
                except Exception as e:  # noqa: BLE001
                    fail("produce: flush(%ds): %r (%d of %d values acknowledged)" % (timeout, e, fo.n_acked(), len(fo.order)))

            produce_through_failover(fo, send, time.sleep, lambda: partition_view(a, t)[1][0][0], flush)
        finally:
            p.close(timeout=10)
        _, parts = partition_view(a, t)
        log("after the kill: partition: (leader, replicas, isr) %s" % dict(sorted(parts.items())))
        fo.restart()

        def three():
            brokers, parts = partition_view(a, t)
            return (brokers, parts) if len(brokers) == 3 else None

        brokers, parts = wait_until(three, 30, "after the restart: Metadata to list 3 brokers")
        log("after the restart: Metadata lists brokers %s; partition: (leader, replicas, isr) %s" % (sorted(brokers), dict(sorted(parts.items()))))
        got, ends = consume_all(bs, t, FAILOVER_PARTITIONS, fo.n_acked())
        fo.verify([(r.value.decode(), r.partition, r.offset) for r in got])
        delete_topic_quietly(a, t)
    finally:
        a.close()


def consume_all(bs, topic, partitions, at_least, timeout=60):
    """Every record of every partition: from the beginning until each position is at the
    partition's end (end_offsets read first) and at least `at_least` records were read."""
    c = KafkaConsumer(bootstrap_servers=bs, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=100)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    got = []
    try:
        c.assign(tps)
        c.seek_to_beginning(*tps)
        ends = c.end_offsets(tps)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for _, recs in c.poll(timeout_ms=500, max_records=2000).items():
                got.extend(recs)
            if len(got) >= at_least and all(c.position(tp) >= ends[tp] for tp in tps):
                break
        pos = {tp.partition: c.position(tp) for tp in tps}
    finally:
        c.close()
    ends = {tp.partition: e for tp, e in ends.items()}
    check(len(got) >= at_least and all(pos[p] >= ends[p] for p in ends),
          "consume: read %d records (positions %s, ends %s) in %ds, %d values were acknowledged" % (len(got), pos, ends, timeout, at_least))
    return got, ends


if __name__ == "__main__":
    log("kafka-python %s" % kafka.__version__)
    sys.exit(main(CLIENT))
