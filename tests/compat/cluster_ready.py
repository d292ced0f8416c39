#!/usr/bin/env python3
"""Waits until run.sh's brokers form one cluster: the metadata quorum (GET /raft/stats of
the first HTTP address) has voters 1..N, and every broker, asked alone for Metadata
(confluent-kafka AdminClient.list_topics with that broker as the only bootstrap server),
lists brokers 1..N. Exits 0 and prints "ok" once it holds; exits 1 with
what is still missing after --timeout seconds, or as soon as a --pid is gone.

    python cluster_ready.py --kafka 127.0.0.1:19092,127.0.0.1:19192,127.0.0.1:19292 \\
        --http 127.0.0.1:19644 --timeout 60 --pid 123 --pid 124 --pid 125
"""

import argparse
import json
import os
import sys
import time
import urllib.request

from confluent_kafka.admin import AdminClient


def voters(http):
    with urllib.request.urlopen("http://%s/raft/stats" % http, timeout=2) as r:
        return sorted(v["node_id"] for v in json.load(r)["voters"])


def metadata_brokers(kafka):
    """Sorted broker ids in the Metadata of the broker at kafka (the only bootstrap server,
    so the first Metadata request goes there)."""
    a = AdminClient({"bootstrap.servers": kafka})
    return sorted(a.list_topics(timeout=3).brokers)


def missing(kafkas, http):
    want = list(range(1, len(kafkas) + 1))
    out = []
    try:
        v = voters(http)
    except Exception as e:  # noqa: BLE001
        v = "unreadable /raft/stats (%s)" % e
    if v != want:
        out.append("raft voters %s" % (v,))
    for i, k in enumerate(kafkas):
        try:
            brokers = metadata_brokers(k)
        except Exception as e:  # noqa: BLE001
            out.append("broker %d (%s): no Metadata (%s)" % (i + 1, k, e))
            continue
        if brokers != want:
            out.append("broker %d (%s): Metadata lists brokers %s" % (i + 1, k, brokers))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kafka", required=True, help="comma-separated Kafka addresses of brokers 1..N")
    ap.add_argument("--http", required=True, help="HTTP address of broker 1")
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--pid", type=int, action="append", default=[], help="fail at once if this process is gone")
    a = ap.parse_args()
    kafkas = [k for k in a.kafka.split(",") if k]
    deadline = time.monotonic() + a.timeout
    while True:
        for pid in a.pid:
            try:
                os.kill(pid, 0)
            except OSError:
                print("broker process %d is gone" % pid)
                return 1
        left = missing(kafkas, a.http)
        if not left:
            print("ok")
            return 0
        if time.monotonic() >= deadline:
            print("after %gs still: %s" % (a.timeout, "; ".join(left)))
            return 1
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
