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
