"""python -m vit_ms.loadgen: load on running servers, N concurrent clients sending one-image requests
(vit_ms/serve/loadgen.py).

    python -m vit_ms.loadgen --url http://127.0.0.1:8000 --images data/digits/val --clients 1 32 --requests 512
    python -m vit_ms.loadgen --url http://127.0.0.1:8000 http://127.0.0.1:8001 --images data/digits/val --repeat 3

Prints requests, failures, p50 / p99 latency and images/s per server and client count; `--clients 1` is the
one-at-a-time baseline. Several servers (say one with batching, one started with --batch-size 1) and --repeat N
are measured interleaved, and the medians printed at the end. Exit status 1 when any request failed.
"""
import argparse
import asyncio
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import UserError, run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vit_ms.loadgen", description=__doc__,
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
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    # MindSpore takes seconds to import (the image helpers' package loads it): imported once the arguments parse,
    # so --help and usage errors answer at once
    from .serve.loadgen import LoadResult, image_payloads, run_load

    payloads = image_payloads(Path(args.images))
    if not payloads:
        raise UserError(f"no image files under '{args.images}' (--images); give a folder of JPEG or PNG files, "
                        f"e.g. data/digits/val")
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
    sys.exit(run_cli(main))
