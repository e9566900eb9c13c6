"""Load on a running server: N concurrent clients send a fixed number of one-image requests to POST /v1/predict.

    python -m vit_ms.serve.loadgen --url http://127.0.0.1:8000 --images data/digits/val --clients 1 32 --requests 512
    python -m vit_ms.serve.loadgen --url http://127.0.0.1:8000 http://127.0.0.1:8001 --images data/digits/val --repeat 3
    result = asyncio.run(run_load(url, payloads, clients=32, requests=512))   # LoadResult

Each client sends its next request when the previous one is answered (a closed loop), cycling through the
images. Prints requests, failures, p50 / p99 latency and images/s; `--clients 1` is the one-at-a-time baseline.
Several servers (say one with batching, one started with --batch-size 1) and --repeat N are measured interleaved.
Every answer is kept (`LoadResult.top1`) so a caller can check it against the model.
"""
import argparse
import asyncio
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import aiohttp  # the server's own package also provides the client
import numpy as np

from ..data.images import IMAGE_EXTENSIONS


@dataclass
class LoadResult:
    clients: int
    requests: int
    seconds: float
    latencies_ms: List[float]  # of the answered requests
    failures: List[str]  # "status: message" of every request that did not get a 200
    top1: Dict[int, set] = field(default_factory=dict)  # payload index -> the top-1 classes answered for it

    @property
    def images_per_sec(self) -> float:
        return len(self.latencies_ms) / self.seconds

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    def line(self, label: str = "") -> str:
        return (f"{label}{self.clients} clients, {self.requests} requests: {len(self.failures)} failed, "
                f"p50 {self.percentile(50):.1f} ms, p99 {self.percentile(99):.1f} ms, "
                f"{self.images_per_sec:.1f} images/s")


async def run_load(url: str, payloads: Sequence[Tuple[bytes, str]], clients: int, requests: int,
                   token: Optional[str] = None, timeout_s: float = 60.0) -> LoadResult:
    """`requests` one-image requests spread over `clients` concurrent clients; payloads are (bytes, content type)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    counter = iter(range(requests))
    latencies: List[float] = []
    failures: List[str] = []
    top1: Dict[int, set] = {}

    async def client(session) -> None:
        for n in counter:
            index = n % len(payloads)
            data, kind = payloads[index]
            began = time.perf_counter()
            try:
                async with session.post(f"{url}/v1/predict?topk=1", data=data,
                                        headers={**headers, "Content-Type": kind}) as response:
                    body = await response.json(content_type=None)
                    if response.status != 200:
                        failures.append(f"{response.status}: {body.get('error')}")
                        continue
            except (aiohttp.ClientError, asyncio.TimeoutError) as err:
                failures.append(f"{type(err).__name__}: {err}")
                continue
            latencies.append((time.perf_counter() - began) * 1000.0)
            top1.setdefault(index, set()).add(body["results"][0]["topk"][0]["class"])

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        start = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        seconds = time.perf_counter() - start
    return LoadResult(clients, requests, seconds, latencies, failures, top1)


def image_payloads(folder: Path, limit: int = 64) -> List[Tuple[bytes, str]]:
    """Up to `limit` image files under `folder` (sorted) as request payloads."""
    files = sorted(f for f in Path(folder).rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS)[:limit]
    kinds = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
    return [(f.read_bytes(), kinds.get(f.suffix.lower(), "application/octet-stream")) for f in files]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vit_ms.serve.loadgen", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", nargs="+", default=["http://127.0.0.1:8000"],
                        help="the server(s) (default http://127.0.0.1:8000); several are measured in turn")
    parser.add_argument("--images", required=True, help="folder of images to send (searched recursively)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 32],
                        help="concurrent clients; several values run one after another (default: 1 32)")
    parser.add_argument("--requests", type=int, default=512, help="requests per run (default 512)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds over every server and client count, interleaved; with more than one the "
                             "medians are printed at the end (a shared machine's load moves between runs)")
    parser.add_argument("--token", help="the servers' --token, if they have one")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    payloads = image_payloads(Path(args.images))
    if not payloads:
        print(f"error: no image files under '{args.images}'", file=sys.stderr)
        return 2
    failed = 0
    runs: Dict[Tuple[str, int], List[LoadResult]] = {}
    for _ in range(args.repeat):
        for url in args.url:
            for clients in args.clients:
                result = asyncio.run(run_load(url, payloads, clients, args.requests, args.token))
                print(result.line(f"{url}: "), flush=True)
                runs.setdefault((url, clients), []).append(result)
                failed += len(result.failures)
                for message in sorted(set(result.failures))[:5]:
                    print(f"  failure: {message}", file=sys.stderr)
    if args.repeat > 1:
        print(f"medians of {args.repeat} runs:")
        for (url, clients), results in runs.items():
            print(f"{url}: {clients} clients: {np.median([r.images_per_sec for r in results]):.1f} images/s, "
                  f"p50 {np.median([r.percentile(50) for r in results]):.1f} ms, "
                  f"p99 {np.median([r.percentile(99) for r in results]):.1f} ms")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
