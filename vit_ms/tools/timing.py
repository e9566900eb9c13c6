"""Timing calls for the benchmarks: the first call apart (graph compilation), then interleaved timed rounds.

    first = first_call(step)                                     # (output, seconds)
    timed = run_interleaved({"ours": a, "mindcv": b}, steps=10, warmup=2)
    summarize(timed["ours"]["times"], batch=16)                  # images/s: median, min, max, IQR
"""
import time
from typing import Callable, Dict, List

import numpy as np


def summarize(times: List[float], batch: int) -> dict:
    """Step times (s) -> images/s: median, min, max and interquartile range."""
    q1, med, q3 = np.percentile(times, [25, 50, 75])
    return {"images_per_sec": batch / med, "images_per_sec_min": batch / max(times),
            "images_per_sec_max": batch / min(times), "images_per_sec_iqr": [batch / q3, batch / q1],
            "step_ms_median": 1e3 * med, "steps": len(times), "batch": batch}


def first_call(call: Callable[[], object]) -> tuple:
    """(output, seconds) of the first call: graph compilation plus one run in graph mode."""
    start = time.perf_counter()
    output = call()
    return output, time.perf_counter() - start


def run_interleaved(calls: Dict[str, Callable[[], object]], steps: int, warmup: int) -> Dict[str, dict]:
    """`warmup` untimed calls each, then `steps` timed rounds alternating between the calls (A, B, A, B, ...)."""
    out = {name: {"times": []} for name in calls}
    for call in calls.values():
        for _ in range(warmup):
            call()
    for _ in range(steps):
        for name, call in calls.items():
            start = time.perf_counter()
            out[name]["last_output"] = call()
            out[name]["times"].append(time.perf_counter() - start)
    return out
