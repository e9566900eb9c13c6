"""File-system checks shared by the entry points."""
from pathlib import Path


def prove_writable(folder: Path, probe_name: str = ".write_test") -> None:
    """Create `folder` (with its parents) and write, then delete, a probe file in it; raises OSError.

    Run before long work so that an unwritable output fails at once. Give concurrent writers (ranks) their own
    `probe_name`.
    """
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / probe_name
    probe.write_bytes(b"")
    probe.unlink()
