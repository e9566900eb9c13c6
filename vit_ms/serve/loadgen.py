"""Load on a running server: N concurrent clients send a fixed number of one-image requests to POST /v1/predict.

    payloads = image_payloads(Path("data/digits/val"))                        # [(bytes, content type)]
    result = asyncio.run(run_load(url, payloads, clients=32, requests=512))   # LoadResult

Each client sends its next request when the previous one is answered (a closed loop), cycling through the
images. A result has requests, failures, p50 / p99 latency and images/s; one client is the one-at-a-time
baseline. Every answer is kept (`LoadResult.top1`) so a caller can check it against the model. The command is
`python -m vit_ms.loadgen` (vit_ms/loadgen.py).
"""
import asyncio
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
