"""An HTTP/1.1 load generator in Python, for bench/hot_paths.py (wrk is not always installed).

Two modes:

* **open loop** (`open_loop`): requests are *scheduled* at a fixed offered rate (request i at
  t0 + i / rate) and each latency is measured from that intended send time, not from when a
  connection happened to be free. A server that stalls for 100 ms therefore shows the stall in
  every request that should have been sent during it (no coordinated omission). Requests are
  handed to a pool of keep-alive connections; when all are busy, the request waits, and the wait
  counts in its latency.
* **closed loop** (`saturate`): C connections each send the next request as soon as the answer
  to the last one is in: the throughput ceiling of the server at concurrency C.

Each mode runs in `processes` worker processes (asyncio, raw sockets, keep-alive), so the
generator can use more than one core; bench/hot_paths.py checks its ceiling against the no-op app
and reports the generator's own CPU.

Requests come from a *request factory*: a picklable (function, params) pair called once per process
to build a `next_request(i) -> (method, path, body bytes or None)` closure (random member ids,
unique receipt numbers).
"""
import asyncio
import os
import random
import statistics
import time
from multiprocessing import get_context


# --- request factories (module-level, so worker processes can import them) -------------------------

def get_paths(params, seed):
    """GET one of `params["paths"]` (templates with {member}), member uniform in 1..members."""
    rng = random.Random(seed)
    paths, members = params["paths"], params.get("members", 1)

    def next_request(i):
        return "GET", rng.choice(paths).format(member=rng.randint(1, members)), None

    return next_request


def get_as_members(params, seed):
    """GET `params["path"]` (a template with {member}) as a member app does: with the member token of
    the member read (`params["tokens"]`: [member id, token] pairs, one picked uniformly)."""
    rng = random.Random(seed)
    path, tokens = params["path"], params["tokens"]

    def next_request(i):
        member, token = rng.choice(tokens)
        return "GET", path.format(member=member), None, f"Authorization: Bearer {token}\r\n"

    return next_request


def post_purchase(params, seed):
    """POST /api/v1/purchases: a unique receipt, a random member, 123.45."""
    rng = random.Random(seed)
    members, prefix = params["members"], f"{params['prefix']}-{seed}"

    def next_request(i):
        body = ('{"member_id": %d, "receipt_no": "%s-%d", "amount": "123.45"}'
                % (rng.randint(1, members), prefix, i)).encode()
        return "POST", params.get("path", "/api/v1/purchases"), body

    return next_request


def post_noop(params, seed):
    def next_request(i):
        return "POST", "/noop", b'{"member_id": 1, "receipt_no": "x", "amount": "123.45"}'

    return next_request


FACTORIES = {"get_paths": get_paths, "get_as_members": get_as_members, "post_purchase": post_purchase,
             "post_noop": post_noop}


# --- one keep-alive connection --------------------------------------------------------------------

class Connection:
    def __init__(self, host, port, headers):
        self.host, self.port = host, port
        self.head_extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.reader = self.writer = None

    async def open(self):
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    async def request(self, method, path, body, head_extra=""):
        """Send one request (with the connection's headers and `head_extra`, whole header lines),
        read the whole answer; its status (0 on a connection error)."""
        if self.writer is None:
            await self.open()
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{self.head_extra}{head_extra}"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + (body or b""))
        try:
            status_and_headers = await self.reader.readuntil(b"\r\n\r\n")
            lines = status_and_headers.split(b"\r\n")
            status = int(lines[0].split(b" ", 2)[1])
            length, chunked, close = 0, False, False
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
                elif name == b"connection" and b"close" in value.lower():
                    close = True
            if chunked:
                while True:
                    size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    await self.reader.readexactly(size + 2)
                    if size == 0:
                        break
            elif length:
                await self.reader.readexactly(length)
            if close:
                self.close()
            return status
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, IndexError):
            self.close()
            return 0


# --- the two modes, in one process ------------------------------------------------------------------

async def _open_loop(host, port, headers, factory, rate, duration, warmup, connections, start_at):
    next_request = factory
    queue = asyncio.Queue()
    latencies, statuses, late_sends, slow = [], {}, [0], []
    measure_from = start_at + warmup
    end_at = measure_from + duration

    async def worker():
        conn = Connection(host, port, headers)
        await conn.open()
        while True:
            item = await queue.get()
            if item is None:
                conn.close()
                return
            intended, request = item
            now = time.time()
            if now - intended > 0.001:
                late_sends[0] += 1  # the request left the generator late: it counts in its latency
            status = await conn.request(*request)
            done = time.time()
            if intended >= measure_from:
                latencies.append(done - intended)
                statuses[status] = statuses.get(status, 0) + 1
                if done - intended > SLOW and len(slow) < 1000:
                    slow.append((intended, done - intended))

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    await asyncio.sleep(max(0.0, start_at - time.time()))
    interval = 1.0 / rate
    i = 0
    while True:
        intended = start_at + i * interval
        if intended >= end_at:
            break
        delay = intended - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((intended, next_request(i)))
        i += 1
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return latencies, statuses, late_sends[0], slow


async def _closed_loop(host, port, headers, factory, connections, duration, warmup, start_at):
    next_request = factory
    latencies, statuses = [], {}
    measure_from = start_at + warmup
    end_at = measure_from + duration
    counter = [0]

    async def worker():
        conn = Connection(host, port, headers)
        await conn.open()
        await asyncio.sleep(max(0.0, start_at - time.time()))
        while True:
            t0 = time.time()
            if t0 >= end_at:
                conn.close()
                return
            counter[0] += 1
            status = await conn.request(*next_request(counter[0]))
            t1 = time.time()
            if t0 >= measure_from and t1 <= end_at:
                latencies.append(t1 - t0)
                statuses[status] = statuses.get(status, 0) + 1

    await asyncio.gather(*(worker() for _ in range(connections)))
    return latencies, statuses, 0, []


def _process_main(mode, host, port, headers, factory_spec, seed, kwargs):
    name, params = factory_spec
    factory = FACTORIES[name](params, seed)
    cpu0 = time.process_time()
    if mode == "open":
        result = asyncio.run(_open_loop(host, port, headers, factory, **kwargs))
    else:
        result = asyncio.run(_closed_loop(host, port, headers, factory, **kwargs))
    return (*result, time.process_time() - cpu0)


def _split(total, parts):
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _run(mode, url_host, port, headers, factory_spec, per_process_kwargs, duration, processes):
    start_at = time.time() + 0.5 + 0.1 * processes  # every process ready and connected first
    ctx = get_context("fork")
    with ctx.Pool(processes) as pool:
        pending = [pool.apply_async(_process_main, (mode, url_host, port, headers, factory_spec,
                                                    random.randrange(1 << 30) + p,
                                                    {**kw, "start_at": start_at}))
                   for p, kw in enumerate(per_process_kwargs)]
        results = [p.get() for p in pending]
    latencies = sorted(l for r in results for l in r[0])
    statuses = {}
    for r in results:
        for k, v in r[1].items():
            statuses[k] = statuses.get(k, 0) + v
    ok = sum(v for k, v in statuses.items() if 200 <= k < 300)
    return {"requests": len(latencies), "per_s": len(latencies) / duration, "seconds": duration,
            "errors": len(latencies) - ok, "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "late_sends": sum(r[2] for r in results),
            "generator_cpu_s": round(sum(r[4] for r in results), 2),
            "stalls": stalls(sorted(item for r in results for item in r[3])),
            **percentiles(latencies)}


def open_loop(host, port, factory_spec, rate, duration, warmup=2.0, connections=32, processes=1, headers=None):
    """Offer `rate` requests/s for warmup + duration seconds; latencies from the intended send times."""
    kwargs = [{"rate": r, "duration": duration, "warmup": warmup, "connections": c}
              for r, c in zip([rate / processes] * processes, _split(connections, processes))]
    result = _run("open", host, port, headers or {}, factory_spec, kwargs, duration, processes)
    result["offered_per_s"] = rate
    return result


def saturate(host, port, factory_spec, duration, warmup=2.0, connections=32, processes=2, headers=None):
    """Closed loop: `connections` keep-alive connections, each sending as soon as it is answered."""
    kwargs = [{"connections": c, "duration": duration, "warmup": warmup} for c in _split(connections, processes)]
    return _run("closed", host, port, headers or {}, factory_spec, kwargs, duration, processes)


SLOW = 0.05  # an open-loop request slower than this (s) is part of a stall


def stalls(slow):
    """Open loop: the requests slower than SLOW, as stalls: runs of them whose intended send times are
    less than a second apart, each (UTC start, seconds spanned, requests, max ms): a pause shows as
    one stall, its time to be set beside other logs (PostgreSQL's checkpoints, say)."""
    found = []
    for intended, latency in slow:
        if found and intended - found[-1]["last"] < 1.0:
            stall = found[-1]
            stall["last"], stall["requests"] = intended, stall["requests"] + 1
            stall["max_ms"] = max(stall["max_ms"], round(latency * 1000, 1))
        else:
            found.append({"first": intended, "last": intended, "requests": 1, "max_ms": round(latency * 1000, 1)})
    return [{"at_utc": time.strftime("%H:%M:%S", time.gmtime(stall["first"])) + f".{int(stall['first'] % 1 * 1000):03d}",
             "seconds": round(stall["last"] - stall["first"], 3), "requests": stall["requests"],
             "max_ms": stall["max_ms"]} for stall in found]


def percentiles(sorted_seconds):
    if not sorted_seconds:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None}

    def pct(q):
        return sorted_seconds[min(len(sorted_seconds) - 1, int(q * len(sorted_seconds)))] * 1000

    return {"p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99),
            "max_ms": sorted_seconds[-1] * 1000, "mean_ms": statistics.fmean(sorted_seconds) * 1000}


if __name__ == "__main__":  # a quick manual check: python bench/loadgen.py HOST PORT PATH [RATE]
    import sys

    host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    spec = ("get_paths", {"paths": [path]})
    if len(sys.argv) > 4:
        print(open_loop(host, port, spec, float(sys.argv[4]), 5))
    else:
        print(saturate(host, port, spec, 5, processes=os.cpu_count() or 1))
