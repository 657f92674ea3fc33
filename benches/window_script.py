#!/usr/bin/env python3
"""Redis CPU per event of the window script (src/enrich/window.lua), from INFO commandstats.

    redis-server --port 6411 --save "" --appendonly no --daemonize yes
    pip install redis
    python3 benches/window_script.py [SCRIPT.lua ...]     # default: src/enrich/window.lua

The calls take the script's 'f' path (the script applies the events: what verdict sends for
an entity it has no copy of, or whose copy is stale). Two shapes of call, on a flushed Redis:
  one card, 50 events per call (a quiet card, and a busy one with 4,000 events of history);
  150 cards of 1-3 events per call (what a batch of a Zipf-keyed stream looks like).
Then the 'c' path (compare-and-set of verdict's copy: what most groups take), 170 cards per
call, each with a 180-byte state and two distinct values, drawn from 170 keys (every key in
the CPU cache) or from 50,000 (as a real keyspace: each key's first touch misses the cache).
"""
import os
import random
import sys

import redis

PORT = int(os.environ.get("REDIS_PORT", "6411"))
r = redis.Redis(port=PORT)
SPEC = [60000, 60000, 3660000, 3, 600000, 3600000, 86400000, 2, "chargebacks_90d", "avg_amount_30d", 604800000]


def call(sha, groups, off, t):
    # One entity type, then per group: its type, read features, mode 'f', version token.
    keys, args = [], [1795900000000, 1] + SPEC + [len(groups)]
    for card, n in groups:
        keys += [f"verdict:win:card:{{{card}}}", f"verdict:f:card:{{{card}}}"]
        args += [1, "1", "f", "bench%d" % off, n]
        for _ in range(n):
            t += random.randint(0, 20)
            args += ["events/0", off, t, 12.5, "m-%d" % random.randint(0, 3000)]
            off += 1
    r.evalsha(sha, len(keys), *keys, *args)
    return off, t


def measure(path, label, warm_calls, calls, make_groups):
    r.flushall()
    sha = r.script_load(open(path).read())
    random.seed(1)
    off, t = 0, 1764003000100
    for _ in range(warm_calls):
        off, t = call(sha, make_groups(), off, t)
    r.config_resetstat()
    events = cards = 0
    for _ in range(calls):
        g = make_groups()
        events += sum(n for _, n in g)
        cards += len(g)
        off, t = call(sha, g, off, t)
    st = r.info("commandstats")["cmdstat_evalsha"]
    print(f"{os.path.basename(path):16} {label:28} {st['usec_per_call']:8.0f} µs/call "
          f"{st['usec'] / events:6.2f} µs/event {st['usec'] / cards:6.2f} µs/card")


for path in sys.argv[1:] or [os.path.join(os.path.dirname(__file__), "..", "src/enrich/window.lua")]:
    measure(path, "one quiet card, 50 events", 0, 200, lambda: [("quiet", 50)])
    measure(path, "one busy card, 50 events", 80, 200, lambda: [("busy", 50)])
    measure(path, "150 cards, 1-3 events each", 50, 100,
            lambda: [("c%d" % random.randint(0, 2000), random.choice([1, 1, 1, 2, 3])) for _ in range(150)])


def measure_cas(path, pool, calls=200, groups=170, blob=180):
    """The compare-and-set path: verdict's copies are current, every group is stored."""
    r.flushall()
    sha = r.script_load(open(path).read())
    random.seed(1)
    token = {}
    p = r.pipeline(transaction=False)
    for c in range(pool):
        fields = {"s": b"x" * blob, "v": "t0"}
        fields.update({f"d:m-{d}": 1764003000000 for d in range(5)})
        p.hset(f"verdict:win:card:{{c{c}}}", mapping=fields)
        token[c] = "t0"
        if c % 1000 == 999:
            p.execute()
    p.execute()
    r.config_resetstat()
    for i in range(calls):
        keys, args = [], [1795900000000, 1] + SPEC + [groups]
        for c in random.sample(range(pool), groups):
            keys += [f"verdict:win:card:{{c{c}}}", f"verdict:f:card:{{c{c}}}"]
            new = f"t{i}"
            # Two distinct values: one known and unchanged, one new in this batch.
            args += [1, "0", "c", token[c], new, 2, "m-1", 1764003000000, "", f"n-{i}", "", 1764003060000,
                     b"y" * blob, "", "0"]
            token[c] = new
        assert b"x" not in r.evalsha(sha, len(keys), *keys, *args), "a copy was stale"
    st = r.info("commandstats")
    e = st["cmdstat_evalsha"]
    print(f"{os.path.basename(path):16} {'compare-and-set, %d keys' % pool:28} {e['usec_per_call']:8.0f} µs/call "
          f"{'':>15} {e['usec'] / (calls * groups):6.2f} µs/card  (HMGET {st['cmdstat_hmget']['usec_per_call']:.2f} µs, "
          f"HSET {st['cmdstat_hset']['usec_per_call']:.2f} µs)")


for path in sys.argv[1:] or [os.path.join(os.path.dirname(__file__), "..", "src/enrich/window.lua")]:
    measure_cas(path, 170)
    measure_cas(path, 50_000)
