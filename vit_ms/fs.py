"""File-system helpers shared by the entry points: a folder proved writable, and small files written atomically.

    prove_writable(run_dir)                       # OSError at once if the output cannot be written
    write_text_atomic(run_dir / "plan.json", text)
    with atomic_writer(path) as f:                # a text file object; binary with mode="wb"
        yaml.safe_dump(d, f)

A write that fails (a full disk, a quota, a vanished folder) leaves the old file whole and no temporary file
beside it, and raises its OSError naming the file (`err.filename`), so the entry point's one-paragraph error says
which file (vit_ms.errors.run_cli).
"""
import contextlib
import os
from pathlib import Path
from typing import IO, Iterator, Optional


def prove_writable(folder: Path, probe_name: str = ".write_test") -> None:
    """Create `folder` (with its parents) and write, then delete, a probe file in it; raises OSError.

    Run before long work so that an unwritable output fails at once. Give concurrent writers (ranks) their own
    `probe_name`.
    """
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / probe_name
    probe.write_bytes(b"")
    probe.unlink()


TEMP_GLOB = ".*.tmp"  # what a killed writer leaves: `temp_path`s, and MindSpore's `.<stem>.partial.tmp` of a save


def temp_path(path: Path) -> Path:
    """Where `atomic_writer` writes before the rename: `.<name>.tmp` beside `path` (it matches `TEMP_GLOB`)."""
    return path.with_name(f".{path.name}.tmp")


@contextlib.contextmanager
def atomic_writer(path: os.PathLike, mode: str = "w", newline: Optional[str] = None) -> Iterator[IO]:
    """A file object on a hidden temp file beside `path`; flushed, synced and renamed over `path` when the block
    ends. On any error the temp file is removed and the error re-raised (an OSError with `filename` = `path`).
    `newline` is open()'s, for text (the csv module wants "")."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": newline})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):  # the temp file may never have been made; the first error is the news
            tmp.unlink()
        if isinstance(err, OSError) and err.filename is None:  # a failed write() names no file
            err.filename = str(path)
        raise


def write_text_atomic(path: os.PathLike, text: str) -> None:
    with atomic_writer(path) as f:
        f.write(text)
