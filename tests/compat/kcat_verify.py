#!/usr/bin/env python3
"""Compare what kcat produced (lines "key:value") with what kcat consumed
(lines "%k|%s|%h|%p|%o"). Prints "FAILED: <reason>" and exits 1 on mismatch."""

import argparse
import sys

from compat_common import CheckFailed, check, log, verify_stored_codec


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--produced", required=True)
    ap.add_argument("--consumed", required=True)
    ap.add_argument("--headers", required=True, help="expected %%h rendering")
    ap.add_argument("--partitions", type=int, required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--codec", help="verify the broker stored batches with this codec")
    ap.add_argument("--no-contiguous", action="store_true", help="offsets need not start at 0")
    a = ap.parse_args()

    produced = []
    for line in open(a.produced, encoding="utf-8"):
        line = line.rstrip("\n")
        if line:
            k, v = line.split(":", 1)
            produced.append((k, v))
    consumed = []
    for n, line in enumerate(open(a.consumed, encoding="utf-8", errors="replace")):
        line = line.rstrip("\n")
        if not line:
            continue
        parts = line.split("|")
        check(len(parts) == 5, "consume: line %d not in %%k|%%s|%%h|%%p|%%o form: %r" % (n + 1, line[:200]))
        k, v, h, p, o = parts
        consumed.append((k, v, h, int(p), int(o)))

    check(
        len(consumed) == len(produced),
        "compare: consumed %d messages, produced %d" % (len(consumed), len(produced)),
    )
    want = sorted(produced)
    got = sorted((k, v) for k, v, _, _, _ in consumed)
    if want != got:
        missing = sorted(set(want) - set(got))[:3]
        extra = sorted(set(got) - set(want))[:3]
        raise CheckFailed("compare: key/value sets differ; missing %s; unexpected %s" % (missing, extra))
    bad_h = [(k, h) for k, _, h, _, _ in consumed if h != a.headers]
    check(not bad_h, "compare: headers %r, expected %r (first of %d)" % (bad_h[:1], a.headers, len(bad_h)))

    order = {kv: i for i, kv in enumerate(produced)}
    by_part = {}
    for k, v, _, p, o in consumed:
        check(0 <= p < a.partitions, "compare: message from partition %d, topic has %d" % (p, a.partitions))
        by_part.setdefault(p, []).append((o, order[(k, v)]))
    for p, rows in sorted(by_part.items()):
        offs = [o for o, _ in rows]
        check(offs == sorted(offs) and len(set(offs)) == len(offs), "order: partition %d offsets not increasing in consume order" % p)
        if not a.no_contiguous:
            check(offs == list(range(len(offs))), "order: partition %d offsets %s... are not 0..%d" % (p, offs[:10], len(offs) - 1))
        seqs = [s for _, s in rows]
        check(seqs == sorted(seqs), "order: partition %d does not hold messages in produce order" % p)
    log("kcat round trip ok: %d messages over partitions %s" % (len(consumed), {p: len(r) for p, r in sorted(by_part.items())}))
    if a.codec:
        verify_stored_codec(a.topic, a.partitions, a.codec)


if __name__ == "__main__":
    try:
        main()
    except CheckFailed as e:
        print("FAILED: %s" % e, flush=True)
        sys.exit(1)
