#!/usr/bin/env python3
"""Helper of scripts/compare-kafka.sh (python3, standard library only).

    helper.py ready HOST:PORT PID TIMEOUT_S [LOG LINE]  # waits until the broker answers
    helper.py record RESULTS.jsonl KEY=VALUE... < client-output
    helper.py table RESULTS.jsonl                       # prints the markdown summary

`ready` sends ApiVersions v0 until the broker answers (and, with LOG and LINE, until LINE is in
the log file), fails if PID exits or TIMEOUT_S passes, and prints the milliseconds it waited.
`record` parses one client run's output, appends a JSON object to RESULTS.jsonl and prints a
one-line digest.

`record` keys (all given by the script): measure, label, broker, run, tool (skiff-bench,
producer-perf, consumer-perf), message_bytes, expected (messages the client was asked for),
broker_cpu_s, client_cpu_s, other_cpu_s, wall_s, rss_kb, hwm_kb, idle_rss_kb, start_ms, rc.
"""

import json
import os
import re
import socket
import sys
import time

BROKERS = ("kafka", "skiff")
BROKER_NAMES = {"kafka": "Kafka", "skiff": "Skiff"}


def parse_skiff_bench(text):
    summary = None
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                summary = json.loads(line)
            except ValueError:
                pass
    if summary is None:
        return {"error": "no JSON summary from skiff-bench"}
    out = {
        "msgs_per_sec": summary.get("msgs_per_sec"),
        "valid": bool(summary.get("valid", True)),
    }
    if summary.get("bench") == "latency":
        out["msgs_per_sec"] = summary.get("rate_achieved")
        for k in ("p50_ms", "p99_ms", "p999_ms", "max_ms"):
            out[k] = summary.get(k)
        # the broker's CPU covers the whole run (warm-up included): count every message sent
        m = re.search(r"^latency: sent (\d+) messages", text, re.M)
        out["messages"] = int(m.group(1)) if m else summary.get("measured")
        out["valid"] = out["valid"] and summary.get("received", 0) >= summary.get("measured", 0)
    else:
        out["messages"] = summary.get("messages")
    return out


# "20000000 records sent, 1234.5 records/sec (0.12 MB/sec), 20.55 ms avg latency, 390.00 ms max
# latency, 17 ms 50th, 49 ms 95th, 58 ms 99th, 61 ms 99.9th."
PRODUCER_PERF = re.compile(
    r"^(\d+) records sent, ([\d.]+) records/sec \([\d.]+ MB/sec\), ([\d.]+) ms avg latency, "
    r"([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99\.9th",
    re.M,
)


def parse_producer_perf(text, expected):
    m = None
    for m in PRODUCER_PERF.finditer(text):
        pass
    if m is None:
        return {"error": "no final line from ProducerPerformance"}
    sent = int(m.group(1))
    return {
        "messages": sent,
        "msgs_per_sec": float(m.group(2)),
        "p50_ms": float(m.group(5)),
        "p99_ms": float(m.group(7)),
        "p999_ms": float(m.group(8)),
        "max_ms": float(m.group(4)),
        "valid": sent >= expected and "Exception" not in text,
    }


def parse_consumer_perf(text, expected):
    # header "start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg,
    # nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec", then one line
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("start.time"):
            names = [n.strip() for n in line.split(",")]
            if i + 1 < len(lines):
                values = [v.strip() for v in lines[i + 1].split(",")]
                row = dict(zip(names, values))
                try:
                    n = int(float(row["data.consumed.in.nMsg"]))
                    return {
                        "messages": n,
                        # from the first fetch to the last message: the group join (with the
                        # default 3 s group.initial.rebalance.delay.ms) is left out, as
                        # skiff-bench's assign-only consumers never join one
                        "msgs_per_sec": float(row["fetch.nMsg.sec"]),
                        "rebalance_ms": float(row["rebalance.time.ms"]),
                        "valid": n >= expected,
                    }
                except (KeyError, ValueError):
                    break
    return {"error": "no result line from ConsumerPerformance"}


def ready(addr, pid, timeout, log=None, line=None):
    host, port = addr.rsplit(":", 1)
    start = time.monotonic()
    # ApiVersions v0, correlation id 1, null client id
    request = bytes.fromhex("0000000a" "0012" "0000" "00000001" "ffff")
    answered = False
    while True:
        if not answered:
            try:
                with socket.create_connection((host, int(port)), timeout=1) as s:
                    s.sendall(request)
                    answered = len(s.recv(8)) >= 8
            except OSError:
                pass
        if answered and (log is None or line in open(log, errors="replace").read()):
            break
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            raise SystemExit("broker (pid %d) exited before serving" % pid)
        if time.monotonic() - start > timeout:
            raise SystemExit("broker did not serve on %s within %d s" % (addr, timeout))
        time.sleep(0.005)
    print(round((time.monotonic() - start) * 1000))


def record(path, args):
    kv = dict(a.split("=", 1) for a in args)
    text = sys.stdin.read()
    expected = int(kv.get("expected") or 0)
    tool = kv["tool"]
    if tool == "skiff-bench":
        res = parse_skiff_bench(text)
    elif tool == "producer-perf":
        res = parse_producer_perf(text, expected)
    elif tool == "consumer-perf":
        res = parse_consumer_perf(text, expected)
    else:
        raise SystemExit("unknown tool " + tool)
    for k in ("run", "message_bytes", "expected", "rc"):
        kv[k] = int(kv[k])
    for k in ("broker_cpu_s", "client_cpu_s", "other_cpu_s", "wall_s", "start_ms"):
        kv[k] = float(kv[k])
    for k in ("rss_kb", "hwm_kb", "idle_rss_kb"):
        kv[k] = int(kv[k]) if kv.get(k, "").isdigit() else None
    kv.update(res)
    if kv["rc"] != 0:
        kv["valid"] = False
    msgs = kv.get("messages") or 0
    kv["broker_cpu_s_per_m"] = kv["broker_cpu_s"] / (msgs / 1e6) if msgs else None
    rate = kv.get("msgs_per_sec")
    kv["mb_per_sec"] = rate * kv["message_bytes"] / 1e6 if rate else None
    with open(path, "a") as f:
        f.write(json.dumps(kv, sort_keys=True) + "\n")
    digest = "%s %s #%d: %s" % (BROKER_NAMES[kv["broker"]], kv["measure"], kv["run"], fmt_rate(kv))
    if kv.get("p50_ms") is not None:
        digest += ", p50/p99/p99.9 %s/%s/%s ms" % tuple(fmt_ms(kv[k]) for k in ("p50_ms", "p99_ms", "p999_ms"))
    digest += "; broker CPU %.2f s (%s s per M msgs), client %.2f s, other %.2f s over %.1f s" % (
        kv["broker_cpu_s"], fmt_num(kv["broker_cpu_s_per_m"]), kv["client_cpu_s"], kv["other_cpu_s"], kv["wall_s"])
    digest += "; broker RSS %s MB (peak %s MB, idle after start %s MB)" % (
        fmt_mb(kv["rss_kb"]), fmt_mb(kv["hwm_kb"]), fmt_mb(kv["idle_rss_kb"]))
    if kv.get("error"):
        digest += "; " + kv["error"]
    print(digest)


def fmt_rate(r):
    if not r.get("msgs_per_sec"):
        return "failed"
    m = r["msgs_per_sec"]
    s = "%.2f M/s" % (m / 1e6) if m >= 1e5 else "{:,.0f}/s".format(m)
    if r["message_bytes"] >= 1000 and r.get("mb_per_sec"):
        s += " (%.0f MB/s)" % r["mb_per_sec"]
    return s + ("" if r.get("valid") else " INVALID")


def fmt_ms(v):
    if v is None:
        return "-"
    return "%.3g" % v if v < 10 else "%.0f" % v


def fmt_num(v, digits=2):
    return "-" if v is None else ("%." + str(digits) + "f") % v


def fmt_mb(kb):
    return "-" if kb is None else "%.0f" % (kb / 1024.0)


def table(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    # one table row per (measure, run), in the order the measures ran
    keys, by_key = [], {}
    for r in rows:
        key = (r["measure"], r["run"])
        if key not in by_key:
            keys.append(key)
            by_key[key] = {}
        by_key[key][r["broker"]] = r
    runs = max([r["run"] for r in rows] or [1])
    cols = [
        ("throughput", fmt_rate),
        ("p50 ms", lambda r: fmt_ms(r.get("p50_ms"))),
        ("p99 ms", lambda r: fmt_ms(r.get("p99_ms"))),
        ("p99.9 ms", lambda r: fmt_ms(r.get("p999_ms"))),
        ("broker CPU s / M msgs", lambda r: fmt_num(r.get("broker_cpu_s_per_m"))),
        ("peak RSS MB", lambda r: fmt_mb(r.get("hwm_kb"))),
        ("RSS at end MB", lambda r: fmt_mb(r.get("rss_kb"))),
    ]
    head = ["measure"]
    for name, _ in cols:
        head += ["%s %s" % (BROKER_NAMES[b], name) for b in BROKERS]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for key in keys:
        measure, run = key
        label = next(iter(by_key[key].values()))["label"]
        cells = [label + (" #%d" % run if runs > 1 else "")]
        for _, f in cols:
            for b in BROKERS:
                r = by_key[key].get(b)
                cells.append(f(r) if r else "not run")
        print("| " + " | ".join(cells) + " |")
    print()
    print("Throughput: messages per second (MB = 10^6 bytes of message value); for the latency rows the")
    print("achieved send rate. p50/p99/p99.9: end-to-end (send to receive) for skiff-bench latency; send")
    print("to acknowledgement (whole milliseconds) for ProducerPerformance. Broker CPU: utime+stime of the")
    print("broker process (all threads; the JVM for Kafka) over the client's run, per million messages")
    print("produced or consumed. Peak RSS: VmHWM over the measure (reset before it); RSS at end: VmRSS")
    print("right after it.")
    notes, disturbed = [], []
    for r in rows:
        who = "%s on %s (run %d)" % (r["label"], BROKER_NAMES[r["broker"]], r["run"])
        if r.get("error"):
            notes.append("%s: %s (exit status %d)" % (who, r["error"], r["rc"]))
        elif not r.get("valid"):
            notes.append("%s: INVALID (exit status %d, %s of %s messages)" % (
                who, r["rc"], r.get("messages"), r.get("expected")))
        disturbed.append(r["other_cpu_s"] / max(r["wall_s"], 1e-9))
    busy = [d for d in disturbed if d > 0.1]
    if busy:
        notes.append("other processes used more than 10 %% of a core during %d of %d runs (up to %.0f %%): "
                     "the machine was not quiet, these are not figures" % (len(busy), len(rows), 100 * max(busy)))
    if notes:
        print()
        print("Warnings:")
        for n in notes:
            print("- " + n)


def main():
    if len(sys.argv) in (5, 7) and sys.argv[1] == "ready":
        ready(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), *sys.argv[5:])
    elif len(sys.argv) >= 3 and sys.argv[1] == "record":
        record(sys.argv[2], sys.argv[3:])
    elif len(sys.argv) == 3 and sys.argv[1] == "table":
        table(sys.argv[2])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
