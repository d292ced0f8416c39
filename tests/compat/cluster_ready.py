#!/usr/bin/env python3
"""Waits until run.sh's brokers form one cluster: the metadata quorum (GET /raft/stats of
the first HTTP address) has voters 1..N, and every broker, asked alone for Metadata
(confluent-kafka AdminClient.list_topics with that broker as the only bootstrap server),
lists brokers 1..N (with --agree: and all of them give every partition the same leader and ISR,
i.e. a restarted broker has caught up). Exits 0 and prints "ok" once it holds; exits 1 with
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


def metadata(kafka):
    """(sorted broker ids, {(topic, partition): (leader, sorted isr)}) in the Metadata of the
    broker at kafka (the only bootstrap server, so the first Metadata request goes there)."""
    a = AdminClient({"bootstrap.servers": kafka})
    md = a.list_topics(timeout=3)
    parts = {}
    for t in md.topics.values():
        if t.error is None:
            for p in t.partitions.values():
                parts[(t.topic, p.id)] = (p.leader, sorted(p.isrs))
    return sorted(md.brokers), parts


# with --agree: the first time the --restarted broker's Metadata named itself the leader of a
# partition that another broker's Metadata gave another leader (a restarted broker still serving
# the leadership it had before it was killed)
STALE_CLAIMS = []


def missing(kafkas, http, agree=False, restarted=()):
    want = list(range(1, len(kafkas) + 1))
    out = []
    try:
        v = voters(http)
    except Exception as e:  # noqa: BLE001
        v = "unreadable /raft/stats (%s)" % e
    if v != want:
        out.append("raft voters %s" % (v,))
    views = {}
    for i, k in enumerate(kafkas):
        try:
            brokers, views[i + 1] = metadata(k)
        except Exception as e:  # noqa: BLE001
            out.append("broker %d (%s): no Metadata (%s)" % (i + 1, k, e))
            continue
        if brokers != want:
            out.append("broker %d (%s): Metadata lists brokers %s" % (i + 1, k, brokers))
    if agree and len(views) == len(kafkas):
        differ = []
        for tp in sorted(set().union(*[set(v) for v in views.values()])):
            seen = {b: v.get(tp) for b, v in views.items()}
            if len(set(map(repr, seen.values()))) > 1:
                differ.append("%s-%d: %s" % (tp[0], tp[1], ", ".join(
                    "broker %d says leader %s isr %s" % (b, x[0], x[1]) if x else "broker %d does not list it" % b
                    for b, x in sorted(seen.items()))))
                for b, x in seen.items():
                    others = [y[0] for c, y in seen.items() if c != b and y]
                    if b in restarted and x and x[0] == b and any(o != b for o in others) and not STALE_CLAIMS:
                        STALE_CLAIMS.append("broker %d's Metadata named itself leader of %s-%d (isr %s) while %s"
                                            % (b, tp[0], tp[1], x[1], ", ".join(
                                                "broker %d's named broker %s" % (c, y[0]) for c, y in sorted(seen.items()) if c != b and y)))
        if differ:
            out.append("the brokers' Metadata differ on %d partition(s): %s" % (len(differ), "; ".join(differ[:3])))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kafka", required=True, help="comma-separated Kafka addresses of brokers 1..N")
    ap.add_argument("--http", required=True, help="HTTP address of broker 1")
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--pid", type=int, action="append", default=[], help="fail at once if this process is gone")
    ap.add_argument("--agree", action="store_true",
                    help="also wait until every broker's Metadata gives every partition the same leader and ISR")
    ap.add_argument("--restarted", type=int, action="append", default=[], metavar="ID",
                    help="with --stale-claims: the broker just restarted")
    ap.add_argument("--stale-claims", metavar="FILE",
                    help="with --agree: write to FILE the first leadership the --restarted broker's Metadata claimed for itself "
                    "while another broker's Metadata gave it to another broker")
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
        left = missing(kafkas, a.http, a.agree, a.restarted)
        if a.stale_claims and STALE_CLAIMS:
            with open(a.stale_claims, "w") as fh:
                fh.write(STALE_CLAIMS[0] + "\n")
        if not left:
            print("ok")
            return 0
        if time.monotonic() >= deadline:
            print("after %gs still: %s" % (a.timeout, "; ".join(left)))
            return 1
        time.sleep(0.1 if a.agree else 0.5)


if __name__ == "__main__":
    sys.exit(main())
