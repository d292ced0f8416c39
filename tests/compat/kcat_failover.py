#!/usr/bin/env python3
"""kcat-failover (run by ``kcat_check.sh failover``): kcat 1.7.1 / librdkafka 2.0.2 produces
through the SIGKILL of the leader of partition 0 of a 3-partition, replication factor 3,
min.insync.replicas=2 topic, and reads it back.

kcat has no admin API: the topic is created with confluent-kafka's AdminClient (as
kcat_check.sh's other topics). Everything else is kcat: ``kcat -L -J`` finds the leader and
the brokers, one ``kcat -P`` (acks=all, enable.idempotence=true, librdkafka's partitioner)
reads the values from a pipe, paced, and reports each delivery on stderr ("Message delivered
to partition P (offset O)", verbosity 3), and ``kcat -C -e`` reads every partition back.
Its delivery reports name positions, not values: a value counts as acknowledged through the
position the consumer read it at (every value must be acknowledged in the end).

Env: as kcat_check.sh, plus SKIFF_COMPAT_CTL (from run.sh: how to have it kill and restart a
broker). Last line on failure: "FAILED: <phase>: <reason>".
"""

import json
import os
import re
import subprocess
import sys
import threading
import time

from compat_common import (
    CheckFailed,
    Failover,
    check,
    fail,
    log,
    produce_through_failover,
    run_id,
    wait_until,
)

BS = os.environ.get("SKIFF_BOOTSTRAP", "127.0.0.1:19092")
DELIVERED = re.compile(r"Message delivered to partition (-?\d+) \(offset (-?\d+)\)")


def kcat_metadata(topic):
    """(broker ids, {partition: (leader, replicas, isr)}) from kcat -L -J -t topic."""
    r = subprocess.run(["kcat", "-b", BS, "-L", "-J", "-t", topic, "-m", "10"], capture_output=True, text=True, timeout=30)
    check(r.returncode == 0, "metadata: kcat -L -J -t %s exited %d: %s" % (topic, r.returncode, r.stderr.strip()[-300:]))
    md = json.loads(r.stdout)
    t = [x for x in md.get("topics", []) if x.get("topic") == topic]
    check(t and not t[0].get("error"), "metadata: %s not in kcat -L: %s" % (topic, json.dumps(md)[:400]))
    parts = {
        p["partition"]: (p["leader"], sorted(r["id"] for r in p.get("replicas", [])), sorted(r["id"] for r in p.get("isrs", [])))
        for p in t[0]["partitions"]
    }
    return {b["id"] for b in md["brokers"]}, parts


def main():
    from check_confluent import admin, create_failover_topic, delete_topic_quietly

    topic = "compat-%s-kcat-failover" % run_id()
    a = admin(BS)
    create_failover_topic(a, topic)
    brokers, parts = kcat_metadata(topic)
    log("kcat -L: brokers %s; partition: (leader, replicas, isr) %s" % (sorted(brokers), dict(sorted(parts.items()))))

    fo = Failover(topic, idempotent=True, tag="kcat")
    stderr_tail = []
    cmd = ["kcat", "-b", BS, "-P", "-t", topic, "-X", "acks=all", "-X", "enable.idempotence=true",
           "-X", "message.timeout.ms=90000", "-X", "linger.ms=5", "-X", "retry.backoff.ms=100", "-v", "-v"]
    log("producing: %s" % " ".join(cmd))
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, bufsize=1)

    def read_stderr():
        for line in proc.stderr:
            now = time.time()
            m = DELIVERED.search(line)
            if m:
                fo.on_ack(None, int(m.group(1)), int(m.group(2)), now)
                continue
            line = line.rstrip("\n")
            stderr_tail.append(line)
            del stderr_tail[:-40]
            if "Delivery failed" in line or "failed to produce" in line.lower():
                fo.on_error(None, line)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()

    def send(v, _part):
        try:
            proc.stdin.write(v + "\n")
            proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            fail("produce: kcat -P exited early (%r): %s" % (e, " / ".join(stderr_tail[-5:])))
        fo.on_sent(v)

    def flush(timeout):
        proc.stdin.close()  # kcat waits for every delivery report, then exits
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            fail("produce: kcat -P still running %ds after the last value (%d of %d acknowledged)" % (timeout, fo.n_acked(), len(fo.order)))
        reader.join(5)
        for line in stderr_tail:
            if line.strip():
                print("  | kcat -P: " + line)
        check(rc == 0, "produce: kcat -P exited %d: %s" % (rc, " / ".join(stderr_tail[-3:])))

    try:
        produce_through_failover(fo, send, time.sleep, lambda: kcat_metadata(topic)[1][0][0], flush)
    finally:
        if proc.poll() is None:
            proc.kill()
    _, parts = kcat_metadata(topic)
    log("after the kill: partition: (leader, replicas, isr) %s" % dict(sorted(parts.items())))
    fo.restart()

    def three():
        brokers, parts = kcat_metadata(topic)
        return (brokers, parts) if len(brokers) == 3 else None

    brokers, parts = wait_until(three, 30, "after the restart: kcat -L to list 3 brokers")
    log("after the restart: kcat -L lists brokers %s; partition: (leader, replicas, isr) %s" % (sorted(brokers), dict(sorted(parts.items()))))

    r = subprocess.run(["kcat", "-b", BS, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%p %o %s\\n",
                        "-X", "fetch.wait.max.ms=100"], capture_output=True, text=True, timeout=60)
    check(r.returncode == 0, "consume: kcat -C exited %d: %s" % (r.returncode, r.stderr.strip()[-300:]))
    consumed = []
    for line in r.stdout.splitlines():
        if line.strip():
            p, o, v = line.split(" ", 2)
            consumed.append((v, int(p), int(o)))
    log("kcat -C -e read %d records" % len(consumed))
    fo.verify(consumed)
    delete_topic_quietly(a, topic)


if __name__ == "__main__":
    t0 = time.monotonic()
    print("--- kcat-failover (kcat, bootstrap %s)" % BS, flush=True)
    try:
        main()
    except CheckFailed as e:
        print("FAILED: %s" % e, flush=True)
        sys.exit(1)
    print("ok kcat-failover (%.1fs)" % (time.monotonic() - t0), flush=True)
