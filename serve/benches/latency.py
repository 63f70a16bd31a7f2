#!/usr/bin/env python3
"""Latency of `imgvec serve` under concurrent clients: p50/p99 per request of an upload search
(k=10), with 1 client (the baseline, same run) and with N clients at once.

    python3 serve/benches/latency.py http://127.0.0.1:7878 QUERY_FOLDER [--clients 4] [--requests 40]
"""

import argparse
import statistics
import threading
import time
import urllib.request
from pathlib import Path


def multipart(name: str, data: bytes):
    boundary = "imgvec-bench-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def client(url: str, queries, requests: int, out: list):
    for i in range(requests):
        name, data = queries[i % len(queries)]
        body, ctype = multipart(name, data)
        req = urllib.request.Request(f"{url}/api/search?k=10", data=body, headers={"Content-Type": ctype})
        start = time.perf_counter()
        with urllib.request.urlopen(req) as r:
            r.read()
        out.append((time.perf_counter() - start) * 1000)


def run(url, queries, clients, requests):
    times, threads = [], []
    start = time.perf_counter()
    for _ in range(clients):
        t = threading.Thread(target=client, args=(url, queries, requests, times))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    return statistics.median(times), p99, len(times) / wall


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("queries")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--requests", type=int, default=40)
    a = ap.parse_args()
    queries = [(p.name, p.read_bytes()) for p in sorted(Path(a.queries).iterdir())[:50]]
    run(a.url, queries, 1, 5)  # warm-up
    for clients in (1, a.clients):
        p50, p99, qps = run(a.url, queries, clients, a.requests)
        print(f"{clients} client(s): p50 {p50:.1f} ms  p99 {p99:.1f} ms  {qps:.1f} requests/s")


if __name__ == "__main__":
    main()
