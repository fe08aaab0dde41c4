"""
Create and destroy throughput through the REST API, against a real redis-server and a
fleet of libvirt test-driver PMs, sequentially and with many requests in flight.

    python bench/create.py [--pms 20] [--vms 400] [--concurrency 50] [--images 1]

With --images N the image_file lists N images and the VMs are made from the last.

Prints figures and ratios; it asserts nothing (these machines are shared and noisy).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twisted.internet import defer, task  # noqa: E402

from tests.clients import LoopbackClient  # noqa: E402
from tests.harness import Daemon, RedisServer, unique_prefix, write_fleet  # noqa: E402
from vorchd.bootimage import write_image  # noqa: E402


async def timed(client, path):
    start = time.perf_counter()
    answer = await client.call(path)
    return time.perf_counter() - start, answer.json


async def run(client, paths, concurrency):
    latencies, answers = [], []
    sem = defer.DeferredSemaphore(concurrency)

    async def one(path):
        t, body = await timed(client, path)
        latencies.append(t)
        answers.append(body)

    start = time.perf_counter()
    await defer.gatherResults([sem.run(lambda p=p: defer.ensureDeferred(one(p))) for p in paths])
    return time.perf_counter() - start, latencies, answers


def report(label, elapsed, latencies):
    ms = sorted(x * 1000 for x in latencies)
    p95 = ms[int(len(ms) * 0.95) - 1] if ms else 0
    print(
        f"{label:<28} {len(ms):>5} calls {len(ms) / elapsed:>8.1f}/s"
        f"  p50 {statistics.median(ms):>7.1f} ms  p95 {p95:>7.1f} ms"
    )
    return len(ms) / elapsed


async def main(reactor, args):
    workdir = Path(tempfile.mkdtemp(prefix="vorchd-bench-"))
    (workdir / "redis").mkdir()
    redis = RedisServer(directory=str(workdir / "redis")).start()
    try:
        uris = write_fleet(workdir, [(64, 262144)] * args.pms)
        (workdir / "images").mkdir()
        images = [workdir / "images" / f"img{i}.img" for i in range(1, args.images + 1)]
        for path in images:
            write_image(path)
        daemon = Daemon(
            workdir / "d", redis.url, unique_prefix(), uris, image_lines=[str(p) for p in images]
        )
        await daemon.start()
        client = LoopbackClient(daemon)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        image = args.images
        creates = [
            f"/vm/create?name=b{i}&instance_type=1&image_id={image}" for i in range(args.vms)
        ]
        seq_n = max(1, args.vms // 10)
        t, lat, ans = await run(client, creates[:seq_n], 1)
        seq = report("create, 1 in flight", t, lat)
        vmids = [a["vmid"] for a in ans]
        t, lat, ans = await run(client, creates[seq_n:], args.concurrency)
        par = report(f"create, {args.concurrency} in flight", t, lat)
        vmids += [a["vmid"] for a in ans]
        print(f"{'concurrency speed-up':<28} {par / seq:>5.2f}x")
        print(f"{'creates refused':<28} {sum(1 for v in vmids if not v):>5}")
        t, lat, _ = await run(client, [f"/vm/query?vmid={v}" for v in vmids], args.concurrency)
        report("query", t, lat)
        t, lat, _ = await run(
            client, [f"/vm/destroy?vmid={v}" for v in vmids if v], args.concurrency
        )
        report("destroy", t, lat)
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(
            f"{'peak RSS':<28} {rss1 / 1024:>7.1f} MiB ({(rss1 - rss0) / 1024:+.1f} MiB"
            f" during the run, {args.pms} PMs)"
        )
        await client.close()
        await daemon.stop()
    finally:
        redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--pms", type=int, default=20)
    parser.add_argument("--vms", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--images", type=int, default=1)
    options = parser.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, options)))
