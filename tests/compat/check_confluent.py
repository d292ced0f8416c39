#!/usr/bin/env python3
"""confluent-kafka (Python, bundled recent librdkafka) compatibility checks.

    python check_confluent.py --bootstrap 127.0.0.1:19092 --step confluent-admin-create-list
    python check_confluent.py --list

Consumers use assign() with a dummy group.id (librdkafka requires one) and
never subscribe or commit, except the *-group-* steps.
Also offers ``--verify-jsonl FILE --topic T``: consume T by assign() and
compare with what another client (kafkajs) wrote to FILE; and
``--verify-group-offsets GROUP --topic T --partitions N [--total RECORDS]``:
fail unless GROUP's committed offset on every partition of T is that
partition's end (used by kcat_check.sh group).
"""

import base64
import json
import random
import sys
import time

from compat_common import (
    FAILOVER_MIN_ISR,
    FAILOVER_PARTITIONS,
    FAILOVER_REPLICAS,
    GROUP_PARTITIONS,
    CheckFailed,
    Failover,
    STEPS,
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

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    TIMESTAMP_CREATE_TIME,
    Consumer,
    KafkaError,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

CLIENT = "confluent-kafka"
OP_TIMEOUT = 30


def errlog(prefix):
    def cb(err):
        log("%s error_cb: %s" % (prefix, err))

    return cb


def admin(bs):
    return AdminClient({"bootstrap.servers": bs, "error_cb": errlog("admin")})


def topic_partitions(a, name):
    """Partition count from a full metadata listing (no topic-specific
    Metadata request, which could auto-create the topic)."""
    md = a.list_topics(timeout=10)
    t = md.topics.get(name)
    if t is None:
        return 0
    if t.error is not None:
        return 0
    return len(t.partitions)


def create_topic(a, name, partitions, configs=None):
    nt = NewTopic(name, num_partitions=partitions, replication_factor=1, config=configs or {})
    fs = a.create_topics([nt], operation_timeout=OP_TIMEOUT, request_timeout=OP_TIMEOUT)
    try:
        fs[name].result(timeout=OP_TIMEOUT + 10)
    except Exception as e:  # noqa: BLE001
        fail("create_topics(%s, %d partitions): %s" % (name, partitions, e))
    wait_until(
        lambda: topic_partitions(a, name) == partitions,
        20,
        "list_topics to show %s with %d partitions" % (name, partitions),
    )
    log("created %s with %d partitions" % (name, partitions))


def delete_topic_quietly(a, name):
    try:
        a.delete_topics([name], operation_timeout=10)[name].result(timeout=20)
    except Exception:  # noqa: BLE001 - cleanup only
        pass


def describe_topic_configs(a, name):
    res = ConfigResource(ResourceType.TOPIC, name)
    fs = a.describe_configs([res], request_timeout=OP_TIMEOUT)
    try:
        (f,) = fs.values()
        return f.result(timeout=OP_TIMEOUT + 10)
    except Exception as e:  # noqa: BLE001
        fail("describe_configs(%s): %s" % (name, e))


# --- message generation / comparison ----------------------------------------


def make_messages(n, partitions, seed, base_ts):
    """n messages with keys, headers (incl. duplicate keys, binary and null
    values), explicit timestamps, some null keys/values and one large value."""
    rng = random.Random(seed)
    msgs = []
    for i in range(n):
        key = ("key-%05d" % i).encode() + bytes([0, 255, i % 256])
        if i % 50 == 7:
            key = None
        text = ("message %d of compatibility run; " % i) * (1 + i % 40)
        value = text.encode() + bytes(rng.getrandbits(8) for _ in range(i % 64))
        if i % 50 == 13:
            value = None  # tombstone
        elif i % 50 == 21:
            value = b""
        elif i == n // 2:
            value = (b"large-value-" * 20000)[:200000]
        if i % 5 == 0:
            headers = []
        else:
            headers = [
                ("seq", str(i).encode()),
                ("bin", bytes([0, 1, 2, 255, i % 256])),
                ("dup", b"first"),
                ("dup", b"second"),
            ]
            if i % 10 == 3:
                headers.append(("nullhdr", None))
            if i % 10 == 4:
                headers.append(("emptyhdr", b""))
        msgs.append(
            {
                "i": i,
                "key": key,
                "value": value,
                "headers": headers,
                "ts": base_ts + i * 10,
                "partition": i % partitions,
            }
        )
    return msgs


def produce(bs, topic, msgs, conf_extra):
    conf = {
        "bootstrap.servers": bs,
        "linger.ms": 5,
        "message.timeout.ms": 60000,
        "error_cb": errlog("producer"),
    }
    conf.update(conf_extra)
    p = Producer(conf)
    results = {}

    def on_delivery(err, m, i):
        results[i] = (err, m.partition() if m is not None else None, m.offset() if m is not None else None)

    for m in msgs:
        while True:
            try:
                p.produce(
                    topic,
                    value=m["value"],
                    key=m["key"],
                    headers=m["headers"] or None,
                    partition=m["partition"],
                    timestamp=m["ts"],
                    on_delivery=lambda err, msg, i=m["i"]: on_delivery(err, msg, i),
                )
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    left = p.flush(60)
    check(left == 0, "produce: %d messages still undelivered after flush(60)" % left)
    errs = [(i, r[0]) for i, r in sorted(results.items()) if r[0] is not None]
    if errs:
        fail(
            "produce: %d/%d deliveries failed, first: message %d: %s"
            % (len(errs), len(msgs), errs[0][0], errs[0][1])
        )
    check(len(results) == len(msgs), "produce: %d delivery reports for %d messages" % (len(results), len(msgs)))
    for m in msgs:
        _, part, off = results[m["i"]]
        check(part == m["partition"], "produce: message %d delivered to partition %s, asked %s" % (m["i"], part, m["partition"]))
        m["offset"] = off
    log("produced %d messages to %s" % (len(msgs), topic))
    return msgs


def consumer(bs, extra=None):
    conf = {
        "bootstrap.servers": bs,
        "group.id": "compat-dummy-group-never-joined",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 100,
        "error_cb": errlog("consumer"),
    }
    conf.update(extra or {})
    return Consumer(conf)


def consume_assigned(bs, topic, partitions, expected_count, timeout=60):
    c = consumer(bs)
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    got = []
    eof = set()
    errors = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for m in c.consume(500, 0.5):
                e = m.error()
                if e is not None:
                    if e.code() == KafkaError._PARTITION_EOF:
                        eof.add(m.partition())
                    else:
                        errors.append(str(e))
                    continue
                eof.discard(m.partition())
                got.append(m)
            if len(got) >= expected_count and len(eof) == partitions:
                break
    finally:
        c.close()
    if errors:
        log("consumer errors: %s" % errors[:5])
    if len(got) < expected_count:
        fail(
            "consume: got %d/%d messages in %ds (partitions at EOF: %s; errors: %s)"
            % (len(got), expected_count, timeout, sorted(eof), errors[:3])
        )
    return got


def norm_headers(h):
    return [(k, v) for k, v in (h or [])]


def compare(msgs, got, check_ts=True):
    """Byte-identical comparison, per partition in offset order."""
    check(len(got) == len(msgs), "compare: consumed %d messages, produced %d" % (len(got), len(msgs)))
    by_off = {}
    for m in got:
        k = (m.partition(), m.offset())
        check(k not in by_off, "compare: partition %d offset %d consumed twice" % k)
        by_off[k] = m
    for m in msgs:
        k = (m["partition"], m["offset"])
        g = by_off.get(k)
        if g is None:
            fail("compare: message %d (partition %d offset %d) not consumed" % (m["i"], k[0], k[1]))
        where = "message %d (p%d@%d)" % (m["i"], k[0], k[1])
        check(g.key() == m["key"], "compare: %s key %r != produced %r" % (where, g.key(), m["key"]))
        if g.value() != m["value"]:
            gv, mv = g.value(), m["value"]
            fail(
                "compare: %s value differs (consumed %s bytes %r..., produced %s bytes %r...)"
                % (where, None if gv is None else len(gv), (gv or b"")[:40], None if mv is None else len(mv), (mv or b"")[:40])
            )
        gh = norm_headers(g.headers())
        check(gh == m["headers"], "compare: %s headers %r != produced %r" % (where, gh, m["headers"]))
        if check_ts:
            tstype, ts = g.timestamp()
            check(
                tstype == TIMESTAMP_CREATE_TIME and ts == m["ts"],
                "compare: %s timestamp (type %d, %d) != produced (CreateTime, %d)" % (where, tstype, ts, m["ts"]),
            )
    # per-partition order: offsets strictly increase in produce order
    last = {}
    for m in msgs:
        p = m["partition"]
        check(m["offset"] > last.get(p, -1), "compare: partition %d offsets not increasing in produce order" % p)
        last[p] = m["offset"]
    log("all %d messages byte-identical (key, value, headers, timestamp)" % len(msgs))


# --- steps ------------------------------------------------------------------


@step("confluent-admin-create-list")
def admin_create_list(bs):
    a = admin(bs)
    t = topic_name("confluent-admin-create-list")
    create_topic(a, t, 3)
    md = a.list_topics(timeout=10)
    check(t in md.topics, "list_topics: %s missing" % t)
    tm = md.topics[t]
    check(tm.error is None, "list_topics: topic error %s" % tm.error)
    check(sorted(tm.partitions) == [0, 1, 2], "list_topics: partitions %s" % sorted(tm.partitions))
    live = set(md.brokers)
    check(live, "list_topics: no brokers in metadata")
    for p in tm.partitions.values():
        check(p.leader in live, "list_topics: partition %d leader %s not a listed broker %s" % (p.id, p.leader, live))
    check(md.controller_id in live, "metadata: controller_id %s is not a live broker %s" % (md.controller_id, live))
    # duplicate create must fail with TOPIC_ALREADY_EXISTS
    fs = a.create_topics([NewTopic(t, num_partitions=3, replication_factor=1)], request_timeout=OP_TIMEOUT)
    try:
        fs[t].result(timeout=OP_TIMEOUT)
        fail("create_topics: creating %s twice succeeded" % t)
    except CheckFailed:
        raise
    except Exception as e:  # noqa: BLE001
        code = e.args[0].code() if e.args and hasattr(e.args[0], "code") else None
        check(code == KafkaError.TOPIC_ALREADY_EXISTS, "create_topics twice: expected TOPIC_ALREADY_EXISTS, got %s" % e)
    delete_topic_quietly(a, t)


@step("confluent-admin-create-partitions")
def admin_create_partitions(bs):
    a = admin(bs)
    t = topic_name("confluent-admin-create-partitions")
    create_topic(a, t, 3)
    fs = a.create_partitions([NewPartitions(t, 5)], operation_timeout=OP_TIMEOUT, request_timeout=OP_TIMEOUT)
    try:
        fs[t].result(timeout=OP_TIMEOUT + 10)
    except Exception as e:  # noqa: BLE001
        fail("create_partitions(%s -> 5): %s" % (t, e))
    wait_until(lambda: topic_partitions(a, t) == 5, 20, "list_topics to show 5 partitions")
    # the new partitions take writes
    msgs = make_messages(10, 5, seed=5, base_ts=int(time.time() * 1000))
    produce(bs, t, msgs, {"enable.idempotence": True})
    got = consume_assigned(bs, t, 5, len(msgs))
    compare(msgs, got)
    delete_topic_quietly(a, t)


@step("confluent-admin-describe-configs")
def admin_describe_configs(bs):
    a = admin(bs)
    t = topic_name("confluent-admin-describe-configs")
    create_topic(a, t, 1)
    cfg = describe_topic_configs(a, t)
    log("describe_configs returned %d entries" % len(cfg))
    for name in ("retention.ms", "cleanup.policy"):
        check(name in cfg, "describe_configs: %s missing (got %s)" % (name, sorted(cfg)[:20]))
    check(cfg["retention.ms"].value not in (None, ""), "describe_configs: retention.ms has no value")
    # broker-level configs: DescribeConfigs on a BROKER resource
    md = a.list_topics(timeout=10)
    bid = str(sorted(md.brokers)[0])
    fs = a.describe_configs([ConfigResource(ResourceType.BROKER, bid)], request_timeout=OP_TIMEOUT)
    try:
        (f,) = fs.values()
        bcfg = f.result(timeout=OP_TIMEOUT + 10)
        log("broker %s config entries: %d" % (bid, len(bcfg)))
    except Exception as e:  # noqa: BLE001
        fail("describe_configs(BROKER %s): %s" % (bid, e))
    delete_topic_quietly(a, t)


@step("confluent-admin-alter-configs")
def admin_alter_configs(bs):
    a = admin(bs)
    t = topic_name("confluent-admin-alter-configs")
    create_topic(a, t, 1)
    res = ConfigResource(ResourceType.TOPIC, t, set_config={"retention.ms": "3600001"})
    fs = a.alter_configs([res], request_timeout=OP_TIMEOUT)
    try:
        (f,) = fs.values()
        f.result(timeout=OP_TIMEOUT + 10)
    except Exception as e:  # noqa: BLE001
        fail("alter_configs(retention.ms=3600001): %s" % e)
    wait_until(
        lambda: describe_topic_configs(a, t)["retention.ms"].value == "3600001",
        10,
        "describe_configs to show retention.ms=3600001 after alter_configs",
    )
    delete_topic_quietly(a, t)


@step("confluent-admin-incremental-alter-configs")
def admin_incremental_alter_configs(bs):
    a = admin(bs)
    t = topic_name("confluent-admin-incremental-alter-configs")
    create_topic(a, t, 1, configs={"retention.ms": "7200000"})
    check(
        describe_topic_configs(a, t)["retention.ms"].value == "7200000",
        "create_topics with config retention.ms=7200000: describe shows %r"
        % describe_topic_configs(a, t)["retention.ms"].value,
    )
    entry = ConfigEntry("retention.ms", "3600002", incremental_operation=AlterConfigOpType.SET)
    res = ConfigResource(ResourceType.TOPIC, t, incremental_configs=[entry])
    fs = a.incremental_alter_configs([res], request_timeout=OP_TIMEOUT)
    try:
        (f,) = fs.values()
        f.result(timeout=OP_TIMEOUT + 10)
    except Exception as e:  # noqa: BLE001
        fail("incremental_alter_configs(SET retention.ms=3600002): %s" % e)
    wait_until(
        lambda: describe_topic_configs(a, t)["retention.ms"].value == "3600002",
        10,
        "describe_configs to show retention.ms=3600002 after incremental_alter_configs",
    )
    # DELETE reverts to the default
    entry = ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE)
    fs = a.incremental_alter_configs([ConfigResource(ResourceType.TOPIC, t, incremental_configs=[entry])], request_timeout=OP_TIMEOUT)
    try:
        (f,) = fs.values()
        f.result(timeout=OP_TIMEOUT + 10)
    except Exception as e:  # noqa: BLE001
        fail("incremental_alter_configs(DELETE retention.ms): %s" % e)
    wait_until(
        lambda: describe_topic_configs(a, t)["retention.ms"].value != "3600002",
        10,
        "describe_configs to stop showing retention.ms=3600002 after DELETE",
    )
    delete_topic_quietly(a, t)


def produce_consume(bs, codec):
    name = "confluent-produce-consume-%s" % codec
    a = admin(bs)
    t = topic_name(name)
    create_topic(a, t, 3)
    msgs = make_messages(1000, 3, seed=sum(map(ord, codec)), base_ts=int(time.time() * 1000) - 3_600_000)
    produce(bs, t, msgs, {"enable.idempotence": True, "compression.type": codec})
    got = consume_assigned(bs, t, 3, len(msgs))
    compare(msgs, got)
    verify_stored_codec(t, 3, codec)
    delete_topic_quietly(a, t)


for _codec in ("none", "gzip", "snappy", "lz4", "zstd"):
    step("confluent-produce-consume-%s" % _codec)(lambda bs, c=_codec: produce_consume(bs, c))


@step("confluent-offsets-for-times")
def offsets_for_times(bs):
    a = admin(bs)
    t = topic_name("confluent-offsets-for-times")
    create_topic(a, t, 2)
    base = int(time.time() * 1000) - 600_000
    # partition 0: 100 messages 1 s apart; partition 1: 50 messages
    msgs = []
    for i in range(150):
        p = 0 if i < 100 else 1
        j = i if p == 0 else i - 100
        msgs.append({"i": i, "key": b"k%d" % i, "value": b"v%d" % i, "headers": [], "ts": base + j * 1000, "partition": p})
    # small batches so the time index has several entries
    produce(bs, t, msgs, {"enable.idempotence": True, "batch.num.messages": 7, "linger.ms": 0})
    c = consumer(bs)
    try:
        lo, hi = c.get_watermark_offsets(TopicPartition(t, 0), timeout=10)
        check((lo, hi) == (0, 100), "get_watermark_offsets(p0) = %s, expected (0, 100)" % ((lo, hi),))
        lo, hi = c.get_watermark_offsets(TopicPartition(t, 1), timeout=10)
        check((lo, hi) == (0, 50), "get_watermark_offsets(p1) = %s, expected (0, 50)" % ((lo, hi),))
        cases = [
            (0, base + 50_000, 50),  # exact timestamp
            (0, base + 49_500, 50),  # between two -> the later one
            (0, base - 10_000, 0),  # before all -> first
            (0, base + 99_000, 99),  # the last
            (0, base + 200_000, OFFSET_END),  # after all -> -1 (end)
            (1, base + 25_000, 25),
            (1, base + 1, 1),
        ]
        q = [TopicPartition(t, p, ts) for p, ts, _ in cases]
        # one query per call: several timestamps for one partition in one call are ambiguous
        for (p, ts, want), tp in zip(cases, q):
            (r,) = c.offsets_for_times([tp], timeout=10)
            check(r.error is None, "offsets_for_times(p%d, %d): error %s" % (p, ts, r.error))
            check(r.offset == want, "offsets_for_times(p%d, ts=base%+d ms): offset %d, expected %d" % (p, ts - base, r.offset, want))
        log("offsets_for_times: %d cases ok" % len(cases))
        # committed-offset-free assign at the looked-up offset reads from there
        (r,) = c.offsets_for_times([TopicPartition(t, 0, base + 90_000)], timeout=10)
        c.assign([TopicPartition(t, 0, r.offset)])
        m = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                break
        check(m is not None and m.error() is None, "consume from offsets_for_times offset: no message")
        check(m.offset() == 90 and m.value() == b"v90", "consume from offset 90 got offset %d value %r" % (m.offset(), m.value()))
    finally:
        c.close()
    # AdminClient.list_offsets (ListOffsets via the admin API)
    specs = {
        TopicPartition(t, 0): OffsetSpec.earliest(),
        TopicPartition(t, 1): OffsetSpec.latest(),
    }
    try:
        fs = a.list_offsets(specs, request_timeout=OP_TIMEOUT)
        res = {tp.partition: f.result(timeout=OP_TIMEOUT) for tp, f in fs.items()}
    except Exception as e:  # noqa: BLE001
        fail("AdminClient.list_offsets: %s" % e)
    check(res[0].offset == 0, "list_offsets(p0, earliest) = %d" % res[0].offset)
    check(res[1].offset == 50, "list_offsets(p1, latest) = %d" % res[1].offset)
    try:
        fs = a.list_offsets({TopicPartition(t, 0): OffsetSpec.for_timestamp(base + 30_000)}, request_timeout=OP_TIMEOUT)
        (f,) = fs.values()
        r = f.result(timeout=OP_TIMEOUT)
    except Exception as e:  # noqa: BLE001
        fail("AdminClient.list_offsets(for_timestamp): %s" % e)
    check(r.offset == 30, "list_offsets(p0, for_timestamp base+30s) = %d, expected 30" % r.offset)
    delete_topic_quietly(a, t)


@step("confluent-admin-delete-topics")
def admin_delete_topics(bs):
    a = admin(bs)
    t = topic_name("confluent-admin-delete-topics")
    create_topic(a, t, 3)
    produce(bs, t, make_messages(30, 3, seed=1, base_ts=int(time.time() * 1000)), {"enable.idempotence": True})
    fs = a.delete_topics([t], operation_timeout=OP_TIMEOUT, request_timeout=OP_TIMEOUT)
    try:
        fs[t].result(timeout=OP_TIMEOUT + 10)
    except Exception as e:  # noqa: BLE001
        fail("delete_topics(%s): %s" % (t, e))
    wait_until(lambda: t not in a.list_topics(timeout=10).topics, 15, "list_topics to stop showing %s" % t)
    # deleting it again reports UNKNOWN_TOPIC_OR_PART
    fs = a.delete_topics([t], operation_timeout=OP_TIMEOUT, request_timeout=OP_TIMEOUT)
    try:
        fs[t].result(timeout=OP_TIMEOUT + 10)
        fail("delete_topics of a deleted topic succeeded")
    except CheckFailed:
        raise
    except Exception as e:  # noqa: BLE001
        code = e.args[0].code() if e.args and hasattr(e.args[0], "code") else None
        check(code == KafkaError.UNKNOWN_TOPIC_OR_PART, "delete_topics twice: expected UNKNOWN_TOPIC_OR_PART, got %s" % e)
    # re-create with the same name: must start empty
    create_topic(a, t, 1)
    c = consumer(bs)
    try:
        lo, hi = c.get_watermark_offsets(TopicPartition(t, 0), timeout=10)
    finally:
        c.close()
    check((lo, hi) == (0, 0), "re-created topic %s is not empty: watermarks %s" % (t, (lo, hi)))
    delete_topic_quietly(a, t)


def topic_leaders(a, topic):
    """(broker ids in Metadata, {partition: leader id}) for topic."""
    md = a.list_topics(timeout=10)
    t = md.topics.get(topic)
    check(t is not None and t.error is None, "metadata: %s missing (%s)" % (topic, None if t is None else t.error))
    return set(md.brokers), {p.id: p.leader for p in t.partitions.values()}


def group_coordinator(a, group):
    """The group's coordinator broker id as AdminClient.describe_consumer_groups reports it
    (for failure messages only; "?" if it cannot say)."""
    try:
        (f,) = a.describe_consumer_groups([group], request_timeout=10).values()
        return f.result(timeout=15).coordinator.id
    except Exception:  # noqa: BLE001
        return "?"


def verify_committed(bs, topic, group, partitions, what, want_ends=None, want_total=None):
    """Every partition's committed offset (Consumer.committed) must be its end (high
    watermark, Consumer.get_watermark_offsets). want_ends: {partition: records produced to
    it}; want_total: records produced to the topic."""
    a = admin(bs)
    _, leaders = topic_leaders(a, topic)
    c = consumer(bs, {"group.id": group})
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    try:
        try:
            committed = c.committed(tps, timeout=15)
        except Exception as e:  # noqa: BLE001
            fail("%s: Consumer.committed(%d partitions) of group %s: %s" % (what, partitions, group, e))
        ends = {}
        for tp in tps:
            try:
                ends[tp.partition] = c.get_watermark_offsets(tp, timeout=10)[1]
            except Exception as e:  # noqa: BLE001
                fail("%s: get_watermark_offsets(partition %d): %s" % (what, tp.partition, e))
    finally:
        c.close()
    empty = [p for p, e in sorted(ends.items()) if e <= 0]
    check(not empty, "%s: partitions %s hold no records (high watermarks %s); every partition needs some" % (what, empty, ends))
    if want_ends is not None:
        for p in range(partitions):
            check(ends[p] == want_ends[p], "%s: partition %d high watermark %d, but %d records were produced to it" % (what, p, ends[p], want_ends[p]))
    if want_total is not None:
        check(sum(ends.values()) == want_total, "%s: high watermarks %s sum to %d, %d records were produced" % (what, ends, sum(ends.values()), want_total))
    got = {}
    for tp in committed:
        if tp.error is not None:
            got[tp.partition] = str(tp.error)
        elif tp.offset >= 0:
            got[tp.partition] = tp.offset
        else:
            got[tp.partition] = None  # OFFSET_INVALID: nothing committed
    compare_committed(what, got, ends, leaders, group_coordinator(a, group))


def produced_ends(msgs, partitions):
    """{partition: 1 + the last produced offset}, from the delivery reports."""
    ends = {p: 0 for p in range(partitions)}
    for m in msgs:
        ends[m["partition"]] = max(ends[m["partition"]], m["offset"] + 1)
    return ends


def consume_group(bs, topic, group, want, members=1, partitions=None, before_consume=None, timeout=60, settle=3.0):
    """`members` consumers subscribe to topic in one group. With more than one, waits until
    their assignments split all `partitions` between them (then calls before_consume(), e.g.
    to produce, so no records are read twice in a rebalance) and fails unless each member
    reads some. Reads until `want` records, polls `settle` s more to catch extra (re-read)
    records, then every member commits synchronously. Returns (records, commit errors)."""
    cs = []
    got = []
    commit_errors = []
    try:
        for _ in range(members):
            c = consumer(
                bs,
                {"group.id": group, "enable.auto.commit": False, "enable.auto.offset.store": True, "enable.partition.eof": False, "session.timeout.ms": 10000},
            )
            cs.append(c)
            got.append([])
            c.subscribe([topic])

        def poll_all(wait):
            for i, c in enumerate(cs):
                for m in c.consume(500, wait):
                    if m.error() is not None:
                        log("group member %d error: %s" % (i + 1, m.error()))
                        continue
                    got[i].append(m)

        if members > 1:
            deadline = time.monotonic() + 30
            while True:
                poll_all(0.2)
                asg = [sorted(tp.partition for tp in c.assignment()) for c in cs]
                flat = sorted(p for a in asg for p in a)
                if all(asg) and flat == list(range(partitions)):
                    break
                if time.monotonic() >= deadline:
                    fail("group join: %d members did not split the %d partitions between them within 30 s (assignments %s)" % (members, partitions, asg))
            log("%d members joined; assignments %s" % (members, asg))
        if before_consume is not None:
            before_consume()
        deadline = time.monotonic() + timeout
        settle_until = None
        while time.monotonic() < deadline:
            poll_all(0.5 / members)
            total = sum(len(g) for g in got)
            if total >= want and settle_until is None:
                settle_until = time.monotonic() + settle
            if settle_until is not None and time.monotonic() >= settle_until:
                break
        for i, c in enumerate(cs):
            parts = {}
            for m in got[i]:
                parts[m.partition()] = parts.get(m.partition(), 0) + 1
            log("group member %d read %d records: per partition %s" % (i + 1, len(got[i]), dict(sorted(parts.items()))))
            if not got[i]:
                continue
            try:
                res = c.commit(asynchronous=False)
                errs = ["partition %d: %s" % (tp.partition, tp.error) for tp in (res or []) if tp.error is not None]
            except Exception as e:  # noqa: BLE001
                errs = [str(e)]
            if errs:
                log("group member %d: commit reported %s" % (i + 1, errs))
                commit_errors.append("member %d: %s" % (i + 1, "; ".join(errs)))
    finally:
        for c in cs:
            c.close()
    if members > 1:
        idle = [i + 1 for i, g in enumerate(got) if not g]
        check(not idle, "group consume: members %s read no records (of %d)" % (idle, sum(len(g) for g in got)))
    return [m for g in got for m in g], commit_errors


@step("confluent-group-subscribe", groups=True)
def group_subscribe(bs):
    a = admin(bs)
    n = GROUP_PARTITIONS
    t = topic_name("confluent-group-subscribe")
    g = topic_name("confluent-group-subscribe", "group")
    create_topic(a, t, n)
    check_leader_spread(t, *topic_leaders(a, t))
    # two members at once; records produced once they have split the partitions
    msgs = make_messages(300, n, seed=3, base_ts=int(time.time() * 1000))
    got, errs = consume_group(
        bs, t, g, 300, members=2, partitions=n, before_consume=lambda: produce(bs, t, msgs, {"enable.idempotence": True})
    )
    check(len(got) == 300, "group consume #1 (2 members): got %d/300" % len(got))
    compare(msgs, got)
    verify_committed(bs, t, g, n, "commit by 2 members", want_ends=produced_ends(msgs, n))
    check(not errs, "commit by 2 members: %s" % errs)
    # a new consumer in the group reads only what was produced since
    more = make_messages(100, n, seed=4, base_ts=int(time.time() * 1000))
    produce(bs, t, more, {"enable.idempotence": True})
    got2, errs2 = consume_group(bs, t, g, 100)
    check(len(got2) == 100, "group consume #2 (resume): got %d messages, expected exactly the 100 new ones" % len(got2))
    compare(more, got2)
    verify_committed(bs, t, g, n, "commit by the resumed consumer", want_ends=produced_ends(msgs + more, n))
    check(not errs2, "commit by the resumed consumer: %s" % errs2)
    delete_topic_quietly(a, t)


# --- failover: the leader of partition 0 is SIGKILLed while producing ----------


def partition_view(a, topic):
    """(broker ids, {partition: (leader, replicas, isr)}) from Metadata."""
    md = a.list_topics(topic=topic, timeout=10)
    t = md.topics.get(topic)
    check(t is not None and t.error is None, "metadata: %s missing (%s)" % (topic, None if t is None else t.error))
    return set(md.brokers), {p.id: (p.leader, sorted(p.replicas), sorted(p.isrs)) for p in t.partitions.values()}


def create_failover_topic(a, topic):
    """FAILOVER_PARTITIONS partitions, replication factor 3, min.insync.replicas=2; waits until
    every partition has a leader and all 3 replicas in its ISR."""
    nt = NewTopic(topic, num_partitions=FAILOVER_PARTITIONS, replication_factor=FAILOVER_REPLICAS,
                  config={"min.insync.replicas": str(FAILOVER_MIN_ISR)})
    try:
        a.create_topics([nt], operation_timeout=OP_TIMEOUT, request_timeout=OP_TIMEOUT)[topic].result(timeout=OP_TIMEOUT + 10)
    except Exception as e:  # noqa: BLE001
        fail("setup: create_topics(%s, %d partitions, replication factor %d): %s" % (topic, FAILOVER_PARTITIONS, FAILOVER_REPLICAS, e))

    def ready():
        brokers, parts = partition_view(a, topic)
        ok = len(parts) == FAILOVER_PARTITIONS and all(
            l >= 0 and len(r) == FAILOVER_REPLICAS and len(i) == FAILOVER_REPLICAS for l, r, i in parts.values())
        return (brokers, parts) if ok else None

    brokers, parts = wait_until(ready, 20, "%s: a leader and 3 in-sync replicas on every partition" % topic)
    log("created %s (min.insync.replicas=%d): brokers %s; partition: (leader, replicas, isr) %s"
        % (topic, FAILOVER_MIN_ISR, sorted(brokers), dict(sorted(parts.items()))))
    return brokers, parts


def wait_three_brokers(a, topic, what):
    """After the restart: Metadata lists 3 brokers (this client's own view); logs the topic."""
    def three():
        brokers, parts = partition_view(a, topic)
        return (brokers, parts) if len(brokers) == 3 else None

    brokers, parts = wait_until(three, 30, "%s: Metadata to list 3 brokers" % what)
    log("%s: Metadata lists brokers %s; partition: (leader, replicas, isr) %s" % (what, sorted(brokers), dict(sorted(parts.items()))))


@step("confluent-failover", groups=True)
def failover_step(bs):
    a = admin(bs)
    t = topic_name("confluent-failover")
    create_failover_topic(a, t)
    fo = Failover(t, idempotent=True, tag="confluent")
    errors = []

    def on_error(err):
        errors.append(err)
        log("producer error_cb: %s" % err)
        if err.fatal():
            fail("produce: fatal producer error: %s" % err)

    p = Producer({
        "bootstrap.servers": bs,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "message.timeout.ms": 90000,
        "retry.backoff.ms": 100,
        "error_cb": on_error,
    })

    def delivered(err, m):
        v = m.value().decode()
        if err is not None:
            fo.on_error(v, err)
        else:
            fo.on_ack(v, m.partition(), m.offset())

    def send(v, part):
        p.produce(t, value=v.encode(), partition=part, on_delivery=delivered)
        fo.on_sent(v, part)

    def flush(timeout):
        left = p.flush(timeout)
        if left:
            fail("produce: %d values still unacknowledged %ds after the last was sent" % (left, timeout))

    produce_through_failover(fo, send, lambda s: p.poll(s), lambda: partition_view(a, t)[1][0][0], flush)
    _, parts = partition_view(a, t)
    log("after the kill: partition: (leader, replicas, isr) %s" % dict(sorted(parts.items())))
    fo.restart()
    wait_three_brokers(a, t, "after the restart")
    # every partition from the beginning, to its end
    got = consume_assigned_all(bs, t, FAILOVER_PARTITIONS, fo.n_acked())
    fo.verify([(m.value().decode(), m.partition(), m.offset()) for m in got])
    delete_topic_quietly(a, t)


def consume_assigned_all(bs, topic, partitions, at_least, timeout=60):
    """Every record of every partition (assign from the beginning until each partition is at
    its end and at least `at_least` records were read)."""
    c = consumer(bs)
    tps = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
    got = []
    try:
        ends = {tp.partition: c.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
        c.assign(tps)
        pos = {p: -1 for p in range(partitions)}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in c.consume(500, 0.5):
                if m.error() is not None:
                    if m.error().code() != KafkaError._PARTITION_EOF:
                        log("consumer error: %s" % m.error())
                    continue
                got.append(m)
                pos[m.partition()] = m.offset()
            if len(got) >= at_least and all(pos[p] + 1 >= ends[p] for p in pos):
                break
    finally:
        c.close()
    check(len(got) >= at_least and all(pos[p] + 1 >= ends[p] for p in pos),
          "consume: read %d records (positions %s, ends %s) in %ds, %d values were acknowledged" % (len(got), pos, ends, timeout, at_least))
    return got


# --- cross-client verification (used by run.sh for kafkajs producers) -------


def verify_jsonl(bs, path, topic):
    """FILE has one JSON object per produced message: partition, offset, key,
    value (base64 or null), headers [[k, base64]], timestamp (ms)."""
    want = []
    with open(path) as fh:
        for line in fh:
            if line.strip():
                want.append(json.loads(line))
    check(want, "verify: %s is empty" % path)
    b64 = lambda s: None if s is None else base64.b64decode(s)  # noqa: E731
    msgs = [
        {
            "i": n,
            "key": b64(w["key"]),
            "value": b64(w["value"]),
            "headers": [(k, b64(v)) for k, v in w["headers"]],
            "ts": int(w["timestamp"]),
            "partition": int(w["partition"]),
            "offset": int(w["offset"]),
        }
        for n, w in enumerate(want)
    ]
    partitions = 1 + max(m["partition"] for m in msgs)
    a = admin(bs)
    partitions = max(partitions, topic_partitions(a, topic))
    got = consume_assigned(bs, topic, partitions, len(msgs))
    compare(msgs, got)
    codec = want[0].get("codec")
    if codec:
        verify_stored_codec(topic, partitions, codec)


if __name__ == "__main__":
    if "--verify-group-offsets" in sys.argv:
        import argparse

        ap = argparse.ArgumentParser()
        ap.add_argument("--bootstrap", default="127.0.0.1:19092")
        ap.add_argument("--verify-group-offsets", metavar="GROUP", required=True)
        ap.add_argument("--topic", required=True)
        ap.add_argument("--partitions", type=int, required=True)
        ap.add_argument("--total", type=int, help="records produced to the topic")
        ap.add_argument("--what", default="committed offsets", help="phase named in a failure")
        ar = ap.parse_args()
        try:
            verify_committed(ar.bootstrap, ar.topic, ar.verify_group_offsets, ar.partitions, ar.what, want_total=ar.total)
        except CheckFailed as e:
            print("FAILED: %s" % e, flush=True)
            sys.exit(1)
        except Exception as e:  # noqa: BLE001
            print("FAILED: %s: unexpected %s: %s" % (ar.what, type(e).__name__, e), flush=True)
            sys.exit(1)
        sys.exit(0)
    if "--verify-jsonl" in sys.argv:
        import argparse

        ap = argparse.ArgumentParser()
        ap.add_argument("--bootstrap", default="127.0.0.1:19092")
        ap.add_argument("--verify-jsonl", required=True)
        ap.add_argument("--topic", required=True)
        ar = ap.parse_args()
        try:
            verify_jsonl(ar.bootstrap, ar.verify_jsonl, ar.topic)
        except CheckFailed as e:
            print("FAILED: verify (confluent-kafka consumer): %s" % e, flush=True)
            sys.exit(1)
        print("ok verify %s" % ar.topic)
        sys.exit(0)
    sys.exit(main(CLIENT))
