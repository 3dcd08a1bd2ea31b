#!/usr/bin/env python3
"""Late stretches of a benchmark run and where the threads were meanwhile.

    scripts/bench.sh --load 2 --rates 1000:20 --dir DIR --sched ...
    scripts/stalls.py DIR

Reads DIR/latency.csv and DIR/broker-latency.csv (each record's publish, hand-over to the
producer and read-back times) and DIR/sched.csv (every thread of hubgate, tansu, mosquitto and
the benchmark every 10 ms: CPU time, time waiting for a CPU, state, kernel wait channel).
Per fixed-rate run: p99 against 3x the broker-alone p99. A late stretch is a run of records
read back later than that (gaps under 200 ms joined); for each: where its records waited
(publish -> hand-over: mosquitto and hubgate; hand-over -> read-back: librdkafka, the broker,
the consumer), and per process how long its threads ran, waited for a CPU, and what the
threads that neither ran nor waited were blocked in (samples x 10 ms, by wait channel).
"""
import collections
import csv
import os
import sys


def records(path):
    """(base epoch ms, {run: [(rate, seq, published, produced, read)]}) in ms since the base.

    Run 0 is the warm-up and is left out; the measured runs are numbered from 1 in the order
    of --rates, in latency.csv and broker-latency.csv alike (two runs may have one rate)."""
    with open(path) as f:
        base = float(f.readline().split("=")[1].split()[0])
        runs = collections.defaultdict(list)
        for r in csv.reader(f):
            if r and r[0] != "run" and int(r[0]) > 0:
                runs[int(r[0])].append(tuple(float(x) for x in r[1:]))
    return base, runs


def pct(values, q):
    values = sorted(values)
    return values[min(int(len(values) * q), len(values) - 1)] if values else 0.0


def stretches(run, limit):
    """Runs of records later than `limit` ms, by publish time, gaps under 200 ms joined."""
    late = sorted((r for r in run if r[4] - r[2] > limit), key=lambda r: r[2])
    out = []
    for r in late:
        if out and r[2] - out[-1][-1][2] < 200:
            out[-1].append(r)
        else:
            out.append([r])
    return out


def sched(path):
    """{(process, tid): [(epoch_ms, thread, state, run_ns, wait_ns, wchan)]} sorted by time."""
    threads = collections.defaultdict(list)
    if not os.path.exists(path):
        return threads
    with open(path) as f:
        for r in csv.DictReader(f):
            threads[(r["process"], r["tid"])].append(
                (float(r["epoch_ms"]), r["thread"], r["state"], int(r["run_ns"]),
                 int(r["wait_ns"]), r["wchan"]))
    return threads


def where(threads, start, end):
    """Per process: ms on a CPU, ms waiting for one, and blocked samples by wait channel."""
    out = collections.defaultdict(lambda: [0.0, 0.0, collections.Counter()])
    for (process, _), samples in threads.items():
        inside = [s for s in samples if start <= s[0] <= end]
        if len(inside) < 2:
            continue
        p = out[process]
        p[0] += (inside[-1][3] - inside[0][3]) / 1e6
        p[1] += (inside[-1][4] - inside[0][4]) / 1e6
        for a, b in zip(inside, inside[1:]):
            if b[3] == a[3] and b[4] == a[4] and b[2] in "SD":
                p[2][f"{b[1]}:{b[2]}:{b[5] or '?'}"] += 1
    return out


def main(d):
    base, hub = records(os.path.join(d, "latency.csv"))
    _, floor = records(os.path.join(d, "broker-latency.csv"))
    threads = sched(os.path.join(d, "sched.csv"))
    floors = {n: pct([r[4] - r[2] for r in run], 0.99) for n, run in floor.items()}
    for n, run in sorted(hub.items()):
        rate = run[0][0]
        lat = [r[4] - r[2] for r in run]
        p99, f99 = pct(lat, 0.99), floors.get(n, 0.0)
        verdict = "met" if p99 <= 3 * f99 else "MISSED"
        print(f"{rate:.0f}/s: {len(run)} records, p50 {pct(lat, 0.5):.1f} p99 {p99:.1f} ms; "
              f"floor p99 {f99:.1f} ms; p99/floor {p99 / f99 if f99 else 0:.2f}: 3x {verdict}")
        for s in stretches(run, 3 * f99):
            start, end = s[0][2], max(r[4] for r in s)
            hand = [r[3] - r[2] for r in s if r[3] > 0]
            after = [r[4] - r[3] for r in s if r[3] > 0]
            print(f"  late stretch at {start / 1e3:.2f}-{end / 1e3:.2f} s: {len(s)} records, "
                  f"latency max {max(r[4] - r[2] for r in s):.0f} ms; publish -> hand-over "
                  f"p50/max {pct(hand, 0.5):.0f}/{max(hand, default=0):.0f} ms, hand-over -> "
                  f"read p50/max {pct(after, 0.5):.0f}/{max(after, default=0):.0f} ms")
            for process, (ran, waited, blocked) in sorted(where(threads, base + start, base + end).items()):
                # Uninterruptible waits (D: disk I/O, page writeback) first: a thread asleep
                # in epoll or on a futex is usually just idle.
                top = sorted(blocked.items(), key=lambda kv: (":D:" not in kv[0], -kv[1]))[:4]
                top = ", ".join(f"{k} {v * 10} ms" for k, v in top)
                print(f"    {process:<10} ran {ran:7.1f} ms, waited for a CPU {waited:7.1f} ms; "
                      f"blocked: {top}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
