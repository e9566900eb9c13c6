"""Where a training step's time goes on CPU: one step under MindSpore's profiler, summed by op type.

    rows, trace = profile_step(lambda: step(images, labels)[0].asnumpy(), "prof/")
    print(format_profile(rows))

`python -m vit_ms.benchmark --profile DIR` runs it on the config's train step after the timed steps.
`mindspore.profiler.profile(activities=[ProfilerActivity.CPU])` (MindSpore 2.10) writes the trace into
<DIR>/<host>_<pid>_<time>_ascend_ms/: ASCEND_PROFILER_OUTPUT/trace_view.json (chrome://tracing, Perfetto or
MindStudio Insight) and FRAMEWORK/cpu_op_type_info_<rank>.csv, the time per op type read here. CPU only: on GPU
and Ascend the device kernels are what matter, and their files differ.
"""
import csv
import glob
import os
from typing import Callable, List, Tuple

from mindspore.profiler import ProfilerActivity, profile, tensorboard_trace_handler


def profile_step(call: Callable[[], object], out_dir: str) -> Tuple[List[dict], str]:
    """Run `call` once under the CPU profiler; (rows by op type, largest first, with ms and share), trace folder."""
    os.makedirs(out_dir, exist_ok=True)
    before = set(glob.glob(os.path.join(out_dir, "*_ascend_ms")))
    with profile(activities=[ProfilerActivity.CPU], on_trace_ready=tensorboard_trace_handler(out_dir)) as prof:
        call()
        prof.step()
    (trace,) = set(glob.glob(os.path.join(out_dir, "*_ascend_ms"))) - before
    (table,) = glob.glob(os.path.join(trace, "FRAMEWORK", "cpu_op_type_info_*.csv"))
    with open(table, newline="", encoding="utf-8") as f:
        rows = [{"op_type": r["op_type"], "ms": float(r["total_compute_time"]), "calls": int(r["type_occurrences"])}
                for r in csv.DictReader(f)]
    total = sum(r["ms"] for r in rows)
    for r in rows:
        r["share"] = r["ms"] / total
    return sorted(rows, key=lambda r: -r["ms"]), trace


def format_profile(rows: List[dict], top: int = 12) -> str:
    """The `top` op types as a table, the rest summed in one line."""
    total = sum(r["ms"] for r in rows)
    lines = [f"{'op type':24s}{'ms/step':>10s}{'share':>8s}{'calls':>7s}"]
    lines += [f"{r['op_type']:24s}{r['ms']:10.1f}{100 * r['share']:7.1f}%{r['calls']:7d}" for r in rows[:top]]
    rest = rows[top:]
    if rest:
        lines.append(f"{f'{len(rest)} other op types':24s}{sum(r['ms'] for r in rest):10.1f}"
                     f"{100 * sum(r['share'] for r in rest):7.1f}%{sum(r['calls'] for r in rest):7d}")
    lines.append(f"{'total op time':24s}{total:10.1f}")
    return "\n".join(lines)
