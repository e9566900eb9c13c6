"""Cross-rank checks for data-parallel runs: all ranks resume from one checkpoint and end with equal weights.

Every rank holds a full copy of the model. The copies start equal (same seed, or the same checkpoint) and stay
equal because every step applies the same all-reduced gradients. Two things break that without any error:
ranks that resume from different checkpoints (`--resume auto` reads each rank's own run directory, and only
rank 0 writes checkpoints, so nodes without shared storage find none or stale ones), and copies that drift
apart. Both are checked here with one all-gather of a short int32 row per rank.

    rows = all_gather_rows([1, 2, 3], world_size)   # (world_size, 3), row r from rank r
"""
import hashlib
import logging
from pathlib import Path
from typing import Callable, List, Mapping, Optional, Sequence

import numpy as np
from mindspore import Tensor, ops

from ..errors import CheckpointError
from ..weights.checkpoint import is_model_key
from .checkpoint import TrainState

log = logging.getLogger("vit_ms")

DIGEST_WORDS = 4  # the first 128 bits of a weights sha256, as int32 words, go into the gathered rows

Gather = Callable[[Sequence[int], int], np.ndarray]


def weights_digest(params: Mapping[str, object]) -> str:
    """sha256 over the model weights in `params` (names sorted; name, dtype, shape and bytes of each).

    `params` is a checkpoint dict or `{p.name: p for p in model.get_parameters()}`; optimizer and resume-state
    entries are left out, so a training checkpoint and the model it was saved from give the same digest.
    """
    digest = hashlib.sha256()
    for name in sorted(k for k in params if is_model_key(k)):
        value = params[name]
        array = np.ascontiguousarray(value.asnumpy() if hasattr(value, "asnumpy") else np.asarray(value))
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def model_digest(model) -> str:
    return weights_digest({p.name: p for p in model.get_parameters()})


def digest_words(digest: str) -> List[int]:
    return np.frombuffer(bytes.fromhex(digest)[: 4 * DIGEST_WORDS], dtype=np.int32).tolist()


def all_gather_rows(row: Sequence[int], world_size: int) -> np.ndarray:
    """Every rank's `row` stacked in rank order: int32 (world_size, len(row)). All ranks must call it."""
    gathered = ops.AllGather()(Tensor(np.asarray([row], np.int32)))  # (world_size, len(row))
    return gathered.asnumpy().reshape(world_size, len(row))


def index_ranges(values: Sequence[int], sep: str = ",") -> str:
    """Sorted integers as runs: [0, 1, 2, 5] -> '0-2,5' (taskset's CPU list syntax; scripts/rank_table.py uses it
    for the cores of each device)."""
    parts, start = [], values[0]
    for prev, cur in zip(values, list(values[1:]) + [None]):
        if cur != prev + 1:
            parts.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = cur
    return sep.join(parts)


def _rank_ranges(ranks: Sequence[int]) -> str:
    """[0, 1, 2, 5] -> 'ranks 0-2, 5'."""
    return ("rank " if len(ranks) == 1 else "ranks ") + index_ranges(ranks, ", ")


def _describe_resume_row(row: np.ndarray) -> str:
    found, epoch, step_in_epoch, global_step = (int(v) for v in row[:4])
    if not found:
        return "no checkpoint (a fresh start)"
    words = row[4:4 + DIGEST_WORDS].astype(np.int32).tobytes().hex()
    return f"epoch {epoch} step {step_in_epoch} (global step {global_step}), weights sha256 {words[:12]}..."


def resume_disagreement(rows: np.ndarray) -> Optional[str]:
    """None when every rank's resume row is the same, else one line per group of ranks that agree."""
    groups: dict = {}
    for rank, row in enumerate(rows):
        groups.setdefault(tuple(int(v) for v in row), []).append(rank)
    if len(groups) == 1:
        return None
    return "; ".join(f"{_rank_ranges(ranks)}: {_describe_resume_row(np.asarray(key))}" for key, ranks in
                     sorted(groups.items(), key=lambda item: item[1][0]))


def check_same_resume(path: Optional[Path], params: Optional[Mapping[str, object]], state: TrainState,
                      rank: int, world_size: int, run_dir: Path, gather: Gather = all_gather_rows) -> None:
    """Raise CheckpointError on every rank unless all ranks resume from the same checkpoint (or all start fresh)."""
    words = digest_words(weights_digest(params)) if params is not None else [0] * DIGEST_WORDS
    row = [int(params is not None), state.epoch, state.step_in_epoch, state.global_step, *words]
    problem = resume_disagreement(gather(row, world_size))
    if problem is None:
        return
    mine = f"'{path}'" if path is not None else f"no checkpoint in '{run_dir}'"
    raise CheckpointError(
        f"the {world_size} ranks would resume from different checkpoints: {problem} (this is rank {rank}: "
        f"{mine}). Only rank 0 writes checkpoints and every rank looks in its own run directory, so with "
        f"--resume auto the run directory must be the same files on every node: put output_dir on storage all "
        f"nodes share, or copy rank 0's '{run_dir / 'last.ckpt'}' to the same path on every node (or pass "
        f"--resume with a path every node can read)")


def check_replicas(model, world_size: int, gather: Gather = all_gather_rows) -> bool:
    """Log whether the model weights are bit-identical on all ranks (with their sha256); True when they are."""
    digest = model_digest(model)
    rows = gather(digest_words(digest), world_size)
    differ = [r for r in range(world_size) if not np.array_equal(rows[r], rows[0])]
    if not differ:
        log.info("model weights identical on all %d ranks (sha256 %s)", world_size, digest)
        return True
    log.warning("model weights differ between ranks: those of %s are not rank 0's (this rank's sha256 %s). "
                "Data-parallel copies should stay bit-identical; non-deterministic kernels (e.g. in gradient "
                "clipping) can make them drift. Rank 0's checkpoints are the reference", _rank_ranges(differ), digest)
    return False
