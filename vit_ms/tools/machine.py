"""What this machine gives a benchmark: a process's peak memory, and its float32 matmul rate (the ceiling
model-FLOPs utilisation is measured against on CPU)."""
import resource
import time

import mindspore as ms
import numpy as np
from mindspore import nn, ops


def peak_rss() -> dict:
    """The process's peak resident set: VmHWM from /proc/self/status (Linux; reset for a spawned process, where
    getrusage's ru_maxrss starts at the parent's peak), else ru_maxrss."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
        return {"peak_bytes": kib * 1024, "source": "process peak RSS (/proc/self/status VmHWM)"}
    except (OSError, StopIteration, ValueError, IndexError):  # ru_maxrss is in KiB on Linux
        return {"peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "source": "process peak RSS (getrusage ru_maxrss)"}


def peak_memory(device_target: str) -> dict:
    if device_target == "CPU":
        return peak_rss()
    return {"peak_bytes": int(ms.runtime.max_memory_allocated()), "source": "mindspore.runtime.max_memory_allocated"}


class _MatMul(nn.Cell):
    def construct(self, a, b):
        return ops.matmul(a, b)


def matmul_rates(n: int = 2048, reps: int = 7) -> dict:
    """The machine's float32 (n x n) @ (n x n) rate in GFLOP/s, best of `reps`: numpy and mindspore.ops.matmul."""
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    ta, cell = ms.Tensor(a), _MatMul()
    calls = {"numpy": lambda: a @ a, "mindspore": lambda: cell(ta, ta).asnumpy()}
    best = {name: float("inf") for name in calls}
    for call in calls.values():
        call()
    for _ in range(reps):  # alternating, so both see the same background load
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            best[name] = min(best[name], time.perf_counter() - start)
    return {"numpy_gflops": 2 * n ** 3 / best["numpy"] / 1e9, "mindspore_gflops": 2 * n ** 3 / best["mindspore"] / 1e9,
            "size": n, "statistic": f"best of {reps}"}
