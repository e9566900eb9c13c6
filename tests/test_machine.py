"""vit_ms.tools.machine: the peak-memory reading and the matmul rate the benchmark reports against."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from vit_ms.tools.machine import matmul_rates

REPO = Path(__file__).resolve().parent.parent


def test_peak_rss_sees_a_new_peak():
    """In a fresh process (this one's peak may already be above anything a test allocates)."""
    script = textwrap.dedent("""
        import json
        import numpy as np
        from vit_ms.tools.machine import peak_memory, peak_rss
        before = peak_rss()
        block = np.ones(256 * 2**20 // 8)  # 256 MiB, every page written
        print(json.dumps([before, peak_memory("CPU"), float(block.sum())]))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    before, after, total = json.loads(out.stdout.strip().splitlines()[-1])
    assert after["source"] == before["source"] and "VmHWM" in after["source"] and total == 2**25
    assert after["peak_bytes"] - before["peak_bytes"] >= 250 * 2**20


def test_matmul_rates_are_flops_over_the_best_time():
    rates = matmul_rates(n=128, reps=2)
    assert rates["size"] == 128 and rates["statistic"] == "best of 2"
    assert rates["numpy_gflops"] > 0 and rates["mindspore_gflops"] > 0
