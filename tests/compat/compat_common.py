"""Shared helpers for the client-compatibility checks (tests/compat).

Each check script registers named steps with @step(...). A step is one check
as reported by run.sh (e.g. ``confluent-produce-consume-gzip``). A step fails
by raising CheckFailed (use fail()/check()); any other exception also fails it.
The last line of a failing step's output is ``FAILED: <reason>``; run.sh shows
that reason on its ``FAIL <name>: <reason>`` line.

Stdlib only (kcat_verify.py imports this too).
"""

import argparse
import glob
import os
import struct
import sys
import time
import traceback

DEFAULT_BOOTSTRAP = "127.0.0.1:19092"


class CheckFailed(Exception):
    pass


def fail(msg):
    raise CheckFailed(msg)


def check(cond, msg):
    if not cond:
        raise CheckFailed(msg)


def log(msg):
    print("  .. " + str(msg), flush=True)


STEPS = {}  # name -> (function, needs_groups)

# callables returning extra text for a failure reason (e.g. the client's last logged error)
FAILURE_CONTEXT = []


def _context():
    extra = [c() for c in FAILURE_CONTEXT]
    extra = [e for e in extra if e]
    return (" [" + "; ".join(extra) + "]") if extra else ""


def step(name, groups=False):
    def deco(fn):
        STEPS[name] = (fn, groups)
        return fn

    return deco


def run_id():
    rid = os.environ.get("SKIFF_COMPAT_RUN_ID")
    if not rid:
        rid = "%d-%d" % (int(time.time()), os.getpid())
        os.environ["SKIFF_COMPAT_RUN_ID"] = rid
    return rid


def topic_name(step_name, suffix=""):
    """A topic name unique to this run and step."""
    name = "compat-%s-%s" % (run_id(), step_name)
    if suffix:
        name += "-" + suffix
    return name.replace("_", "-")


def wait_until(fn, timeout, what, interval=0.25):
    """Call fn until it returns a truthy value; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    last_exc = None
    last_val = None
    while True:
        try:
            last_val = fn()
            if last_val:
                return last_val
        except CheckFailed:
            raise
        except Exception as e:  # noqa: BLE001 - report the last error seen
            last_exc = e
        if time.monotonic() >= deadline:
            detail = ""
            if last_exc is not None:
                detail = " (last error: %r)" % (last_exc,)
            elif last_val is not None:
                detail = " (last value: %r)" % (last_val,)
            fail("timed out after %ss waiting for %s%s" % (timeout, what, detail))
        time.sleep(interval)


# --- consumer groups on a cluster --------------------------------------------

# Partitions of every group check's topic: with leaders placed round-robin, 6 partitions put
# two leaders on each broker of a 3-broker cluster, so whichever broker coordinates the group,
# most partitions are led by another one.
GROUP_PARTITIONS = 6


def expected_brokers():
    """SKIFF_COMPAT_EXPECT_BROKERS (set by run.sh for the group checks): how many brokers the
    cluster must have, so a group check cannot quietly pass against a single broker."""
    v = os.environ.get("SKIFF_COMPAT_EXPECT_BROKERS", "")
    return int(v) if v.strip() else None


def check_leader_spread(topic, brokers, leaders):
    """brokers: broker ids in Metadata; leaders: {partition: leader id}. Fails when the
    cluster is smaller than run.sh said or the partitions' leaders are not spread over
    (up to) every broker. Logs the placement."""
    log("metadata: brokers %s; %s partition leaders %s" % (sorted(brokers), topic, dict(sorted(leaders.items()))))
    want = expected_brokers()
    if want is None:
        return
    check(
        len(brokers) == want,
        "setup: Metadata lists %d broker(s) %s, run.sh started a %d-broker cluster" % (len(brokers), sorted(brokers), want),
    )
    spread = set(leaders.values())
    need = min(want, len(leaders))
    check(
        len(spread) >= need and spread <= set(brokers),
        "setup: %s's partition leaders %s are on brokers %s, expected them spread over %d brokers %s"
        % (topic, dict(sorted(leaders.items())), sorted(spread), need, sorted(brokers)),
    )


def compare_committed(what, committed, ends, leaders, coordinator=None):
    """committed: {partition: offset or None (nothing committed) or an error string};
    ends: {partition: high watermark}; leaders: {partition: leader id}. Fails naming every
    partition whose committed offset is not its end."""
    bad = []
    for p in sorted(ends):
        c = committed.get(p)
        if c != ends[p]:
            shown = "nothing committed" if c is None else ("error %s" % c if isinstance(c, str) else "committed %s" % c)
            bad.append("partition %d (leader broker %s): %s, end %d" % (p, leaders.get(p, "?"), shown, ends[p]))
    where = "" if coordinator is None else " (group coordinator: broker %s)" % coordinator
    if bad:
        fail(
            "%s: %d of %d partitions' committed offsets are not their ends%s: %s"
            % (what, len(bad), len(ends), where, "; ".join(bad))
        )
    log("%s: committed offset == end offset on all %d partitions%s: %s" % (what, len(ends), where, dict(sorted(ends.items()))))


# --- record-batch inspection of the broker's data dir -----------------------

CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
CODEC_NAMES = {v: k for k, v in CODEC_IDS.items()}


def _segment_files(data_dir, topic, partition):
    pats = [
        os.path.join(data_dir, "**", "%s-%d" % (topic, partition), "*.log"),
        os.path.join(data_dir, "**", topic, str(partition), "*.log"),
    ]
    files = []
    for p in pats:
        files.extend(glob.glob(p, recursive=True))
    return sorted(set(files))


def stored_batch_codecs(data_dir, topic, partitions):
    """Return (codec_counts, note). codec_counts maps codec name -> batches,
    read from the segment files as the broker stored them (design: record
    batches kept as received). Returns ({}, note) if the layout is not found
    or not recognised; that is not a failure of the check."""
    if not data_dir or not os.path.isdir(data_dir):
        return {}, "no data dir given"
    counts = {}
    found_any = False
    for p in range(partitions):
        for f in _segment_files(data_dir, topic, p):
            found_any = True
            try:
                with open(f, "rb") as fh:
                    data = fh.read()
            except OSError as e:
                return {}, "cannot read %s: %s" % (f, e)
            pos = 0
            while pos + 61 <= len(data):
                (batch_len,) = struct.unpack_from(">i", data, pos + 8)
                magic = data[pos + 16]
                if magic != 2 or batch_len < 49:
                    if pos == 0:
                        return {}, "%s does not start with a v2 record batch" % f
                    break  # torn / preallocated tail
                (attrs,) = struct.unpack_from(">h", data, pos + 21)
                name = CODEC_NAMES.get(attrs & 7, "codec%d" % (attrs & 7))
                counts[name] = counts.get(name, 0) + 1
                pos += 12 + batch_len
    if not found_any:
        return {}, "no segment files found for %s under %s" % (topic, data_dir)
    return counts, ""


def verify_stored_codec(topic, partitions, codec):
    """Fail if the broker's stored batches for topic use another codec than
    the producer was asked for (a client that silently stops compressing,
    e.g. librdkafka < 2.10 when Produce's advertised minimum is >= 3)."""
    data_dir = os.environ.get("SKIFF_DATA_DIR", "")
    counts, note = stored_batch_codecs(data_dir, topic, partitions)
    if not counts:
        log("stored codec not verified: %s" % (note or "no batches found"))
        return
    log("stored batches by codec: %s" % counts)
    wrong = {k: v for k, v in counts.items() if k != codec}
    hint = ""
    if codec == "lz4" and "none" in wrong:
        hint = " (librdkafka enables LZ4 only when the broker's ApiVersions includes FindCoordinator v0)"
    check(
        not wrong,
        "stored-codec: asked for compression %s but the broker's log holds batches %s%s"
        % (codec, counts, hint),
    )


# --- failover: run.sh kills and restarts brokers on request --------------------

# The *-failover checks create a topic with FAILOVER_PARTITIONS partitions, replication factor
# 3 and min.insync.replicas=FAILOVER_MIN_ISR, and have run.sh SIGKILL the leader of partition 0
# while they produce.
FAILOVER_PARTITIONS = 3
FAILOVER_REPLICAS = 3
FAILOVER_MIN_ISR = 2


def broker_ctl(action, broker_id, timeout):
    """Asks run.sh to "kill" (SIGKILL) or "restart" (same flags and data dir; waits until it
    is healthy and every broker's Metadata lists all brokers) broker broker_id.

    Protocol: the check writes "<action> <id>" to $SKIFF_COMPAT_CTL/<n>.req (n = 1, 2, ...,
    renamed into place); run.sh, which polls that directory while the check runs, answers in
    <n>.resp: "ok <id> <pid> <epoch seconds>" (kill: when the signal was sent; restart: when
    the broker was back) or "error <reason>". Returns the answer's words after "ok"."""
    ctl = os.environ.get("SKIFF_COMPAT_CTL", "")
    check(
        ctl and os.path.isdir(ctl),
        "setup: SKIFF_COMPAT_CTL is not a directory: only run.sh can kill and restart its brokers (run this check through run.sh)",
    )
    seq = len(glob.glob(os.path.join(ctl, "*.req"))) + 1
    tmp = os.path.join(ctl, "%d.tmp" % seq)
    with open(tmp, "w") as fh:
        fh.write("%s %d\n" % (action, broker_id))
    os.rename(tmp, os.path.join(ctl, "%d.req" % seq))
    resp = os.path.join(ctl, "%d.resp" % seq)
    deadline = time.monotonic() + timeout
    while not os.path.exists(resp):
        if time.monotonic() >= deadline:
            fail("%s broker %d: run.sh did not answer within %ss" % (action, broker_id, timeout))
        time.sleep(0.05)
    words = open(resp).read().split()
    check(words and words[0] == "ok", "%s broker %d: run.sh: %s" % (action, broker_id, " ".join(words) or "empty answer"))
    return words[1:]


class Failover:
    """Bookkeeping of one *-failover check: what was sent, acknowledged (when, where), the
    kill, and the verification of what a consumer read back.

    Values are "<tag>-NNNNNN", unique, in send order. A client whose acknowledgements name the
    record (confluent-kafka, kafka-python) reports on_ack(value, partition, offset); kcat's
    delivery reports only name partition and offset (on_ack(None, partition, offset)): its
    values are matched through the position the consumer read them at."""

    def __init__(self, topic, idempotent, tag="fo"):
        self.topic = topic
        self.idempotent = idempotent
        self.tag = tag
        self.order = []  # values, in send order
        self.sent_at = {}  # value -> wall-clock time it was handed to the client
        self.partition_of = {}  # value -> partition asked for (None: the client's partitioner)
        self.acks = {}  # value -> (partition, offset, time)
        self.anon_acks = []  # (partition, offset, time): acknowledgements that do not name the value
        self.errors = {}  # value (or a number) -> error text
        self.kill_time = None  # wall-clock time run.sh sent SIGKILL
        self.victim = None
        self.recovered_at = None  # first acknowledgement on partition 0 of a record sent after the kill

    def value(self, i):
        return "%s-%06d" % (self.tag, i)

    def index(self, value):
        return int(value.rsplit("-", 1)[1])

    def on_sent(self, value, partition=None):
        self.order.append(value)
        self.sent_at[value] = time.time()
        self.partition_of[value] = partition

    def n_acked(self):
        return len(self.acks) + len(self.anon_acks)

    def on_ack(self, value, partition, offset, t=None):
        t = time.time() if t is None else t
        if value is None:
            self.anon_acks.append((partition, offset, t))
            after = self.kill_time is not None and t > self.kill_time + 0.5
        else:
            self.acks[value] = (partition, offset, t)
            after = self.kill_time is not None and self.sent_at.get(value, 0) > self.kill_time
        if after and partition == 0 and self.recovered_at is None:
            self.recovered_at = t

    def on_error(self, value, err):
        self.errors[value if value is not None else len(self.errors)] = str(err)

    def kill(self, leader):
        """run.sh SIGKILLs broker `leader` (partition 0's leader)."""
        words = broker_ctl("kill", leader, 15)
        self.victim = leader
        self.kill_time = float(words[2])
        log(
            "run.sh SIGKILLed broker %d (pid %s), the leader of %s partition 0, after %d of %d values were acknowledged"
            % (leader, words[1], self.topic, self.n_acked(), len(self.order))
        )

    def restart(self):
        """run.sh restarts the killed broker and waits until it is healthy and every broker's
        Metadata lists all three."""
        t0 = time.monotonic()
        words = broker_ctl("restart", self.victim, 75)
        log("run.sh restarted broker %d (pid %s) in %.1fs; it is healthy and in every broker's Metadata" % (self.victim, words[1], time.monotonic() - t0))

    def stop_sending(self, now=None):
        """True once a record sent after the kill was acknowledged on partition 0 (the new
        leader takes writes) and 1 s more has passed."""
        now = time.time() if now is None else now
        return self.recovered_at is not None and now >= self.recovered_at + 1.0

    def timings(self):
        """The first acknowledgements after the kill (information only), as one line."""
        k = self.kill_time
        acks = [(p, t, self.sent_at.get(v, 0)) for v, (p, _, t) in self.acks.items()]
        acks += [(p, t, None) for p, _, t in self.anon_acks]

        def first(pred):
            ts = [t for p, t, s in acks if t > k and pred(p, s)]
            return "+%.2fs" % (min(ts) - k) if ts else "none"

        parts = ["first ack after the kill %s" % first(lambda p, s: True)]
        if self.acks:
            parts.append("of a record sent after it %s" % first(lambda p, s: s is not None and s > k))
            parts.append("on partition 0 (sent after it) %s" % first(lambda p, s: p == 0 and s is not None and s > k))
        else:
            parts.append("on partition 0 %s" % first(lambda p, s: p == 0))
        before = sum(1 for p, t, s in acks if t <= k)
        return "killed broker %d (leader of partition 0); %s; %d of %d acks came before the kill" % (
            self.victim, ", ".join(parts), before, len(acks))

    def report_timings(self):
        line = self.timings()
        log(line)
        # run.sh appends the last "INFO: " line to the check's PASS/FAIL line
        print("INFO: " + line, flush=True)

    def check_all_acknowledged(self):
        if self.errors:
            some = sorted(self.errors.items(), key=lambda kv: str(kv[0]))[:3]
            fail("produce: %d of %d values not acknowledged (delivery failed), e.g. %s" % (len(self.errors), len(self.order), some))
        n = self.n_acked()
        check(n == len(self.order), "produce: %d of %d values acknowledged, the rest neither acknowledged nor failed" % (n, len(self.order)))
        log("all %d values acknowledged (%s)" % (n, "idempotent producer" if self.idempotent else "producer without idempotence"))

    def positions(self, consumed):
        """Per partition: the offsets acknowledged and the offsets read (for failure messages)."""
        acked = {}
        for p, o, _ in list(self.acks.values()) + self.anon_acks:
            acked.setdefault(p, []).append(o)
        read = {}
        for _, p, o in consumed:
            read.setdefault(p, []).append(o)
        rng = lambda os_: "%d..%d (%d)" % (min(os_), max(os_), len(os_)) if os_ else "none"  # noqa: E731
        return "; ".join(
            "partition %d: acknowledged offsets %s, read %s" % (p, rng(acked.get(p, [])), rng(read.get(p, [])))
            for p in sorted(set(acked) | set(read))
        )

    def verify(self, consumed):
        """consumed: [(value, partition, offset)] read from the beginning of every partition.
        Every acknowledged value must be there at the position its acknowledgement named, and
        nothing else than what was sent; with idempotence each exactly once (without it,
        duplicates from retries are reported, not failed)."""
        sent = set(self.order)
        where = {}
        for v, p, o in consumed:
            where.setdefault(v, []).append((p, o))
        foreign = [v for v in where if v not in sent]
        check(not foreign, "consume: %d values that were never sent, e.g. %s" % (len(foreign), foreign[:3]))
        at = {(p, o): v for v, p, o in consumed}
        check(len(at) == len(consumed), "consume: some (partition, offset) read twice")
        # kcat: acknowledgements name positions; the value is the one read there
        acked = dict((v, a[:2]) for v, a in self.acks.items())
        lost = []
        for p, o, _ in self.anon_acks:
            v = at.get((p, o))
            if v is None:
                lost.append("partition %d offset %d" % (p, o))
            else:
                acked[v] = (p, o)
        check(not lost, "consume: %d acknowledged positions hold no record: %s (%s)" % (len(lost), lost[:5], self.positions(consumed)))
        if self.anon_acks:
            # every value was acknowledged (check_all_acknowledged): each must have been read
            unread = [v for v in self.order if v not in where]
            check(not unread, "consume: %d of %d acknowledged values missing, e.g. %s" % (len(unread), len(self.order), unread[:5]))
        missing = []
        moved = []
        for v, (p, o) in acked.items():
            if v not in where:
                missing.append("%s (acknowledged at partition %d offset %d, %s the kill)" % (v, p, o, "after" if self.acks.get(v, (0, 0, 0))[2] > (self.kill_time or 0) else "before"))
            elif (p, o) not in where[v]:
                moved.append("%s acknowledged at partition %d offset %d, read at %s" % (v, p, o, where[v]))
        check(not missing, "consume: %d of %d acknowledged values missing: %s (%s)" % (len(missing), len(acked), missing[:5], self.positions(consumed)))
        check(not moved, "consume: %d acknowledged values not at the acknowledged offset: %s" % (len(moved), moved[:5]))
        dups = {v: ps for v, ps in where.items() if len(ps) > 1}
        if dups:
            some = sorted(dups.items())[:5]
            if self.idempotent:
                fail("consume: %d values stored more than once despite the idempotent producer: %s" % (len(dups), some))
            log("NOTE: %d values stored more than once (retries of a producer without idempotence; allowed): %s" % (len(dups), some))
        # order within each partition (information: a single producer's records, in send order)
        inversions = 0
        last = {}
        for v, p, o in sorted(consumed, key=lambda x: (x[1], x[2])):
            i = self.index(v)
            if p in last and i < last[p]:
                inversions += 1
            last[p] = i
        per_part = {}
        for v, p, o in consumed:
            per_part[p] = per_part.get(p, 0) + 1
        log(
            "consumed %d records (per partition %s): every acknowledged value once%s, at its acknowledged offset; %s"
            % (len(consumed), dict(sorted(per_part.items())), "" if not dups else " or more",
               "in send order within each partition" if not inversions else "NOTE: %d out of send order within a partition" % inversions)
        )


def produce_through_failover(fo, send, pump, leader_of_p0, flush, batch=10, tick=0.05, acks_before_kill=100):
    """Produces fo's values until the kill of partition 0's leader is behind the client:

    send(value, partition) hands one value to the client (explicit partitions i % 3);
    pump(seconds) lets it deliver acknowledgements (callbacks call fo.on_ack / fo.on_error);
    leader_of_p0() reads partition 0's leader from Metadata; flush(seconds) waits for the rest.
    About batch / tick values per second; once acks_before_kill values are acknowledged,
    run.sh SIGKILLs the leader of partition 0; sending goes on until a record sent after the
    kill is acknowledged on partition 0 (its new leader), plus 1 s (at most 60 s)."""
    t0 = time.time()
    i = 0
    while True:
        for _ in range(batch):
            send(fo.value(i), i % FAILOVER_PARTITIONS)
            i += 1
        until = time.monotonic() + tick
        while True:  # pump() may return early (confluent-kafka's poll() does once it served a callback)
            left = until - time.monotonic()
            if left <= 0:
                break
            pump(left)
        now = time.time()
        if fo.kill_time is None:
            if fo.n_acked() >= acks_before_kill:
                fo.kill(leader_of_p0())
            elif now - t0 > 20:
                fail("produce: only %d of %d values acknowledged in 20 s, before any broker was killed%s"
                     % (fo.n_acked(), len(fo.order), "; errors %s" % list(fo.errors.items())[:3] if fo.errors else ""))
        elif fo.stop_sending(now):
            break
        elif now - fo.kill_time > 60:
            log("no record sent after the kill acknowledged on partition 0 within 60 s: stop sending")
            break
    sent_after = sum(1 for v in fo.order if fo.sent_at[v] > fo.kill_time)
    log("sent %d values (%d after the kill) in %.1fs; waiting for the remaining acknowledgements"
        % (len(fo.order), sent_after, time.time() - t0))
    flush(60)
    fo.report_timings()
    fo.check_all_acknowledged()


# --- main ---------------------------------------------------------------------


def main(client):
    ap = argparse.ArgumentParser(description="%s compatibility checks" % client)
    ap.add_argument("--bootstrap", default=os.environ.get("SKIFF_BOOTSTRAP", DEFAULT_BOOTSTRAP))
    ap.add_argument("--step", action="append", help="run only this step (repeatable)")
    ap.add_argument("--list", action="store_true", help="list steps and exit")
    ap.add_argument("--groups", action="store_true", help="with no --step: include consumer-group steps")
    args = ap.parse_args()

    if args.list:
        for name, (_, groups) in STEPS.items():
            print(name + ("  (groups)" if groups else ""))
        return 0

    if args.step:
        unknown = [s for s in args.step if s not in STEPS]
        if unknown:
            print("unknown step(s): %s; known: %s" % (unknown, list(STEPS)), file=sys.stderr)
            return 2
        names = args.step
    else:
        names = [n for n, (_, g) in STEPS.items() if args.groups or not g]

    failed = 0
    for name in names:
        fn, _ = STEPS[name]
        t0 = time.monotonic()
        print("--- %s (%s, bootstrap %s)" % (name, client, args.bootstrap), flush=True)
        try:
            fn(args.bootstrap)
        except CheckFailed as e:
            failed += 1
            print("FAILED: %s" % e, flush=True)
            continue
        except Exception as e:  # noqa: BLE001
            failed += 1
            traceback.print_exc(file=sys.stdout)
            print("FAILED: unexpected %s: %s%s" % (type(e).__name__, e, _context()), flush=True)
            continue
        print("ok %s (%.1fs)" % (name, time.monotonic() - t0), flush=True)
    if len(names) > 1:
        print("%d passed, %d failed" % (len(names) - failed, failed))
    return 1 if failed else 0
