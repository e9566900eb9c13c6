"""The environment variables a run reads, checked before they are used: one paragraph for each that is malformed.

    problems = mindspore_environment_problems(os.environ)   # what `import mindspore` would fail on
    device_id = launch_int(os.environ, "DEVICE_ID", 0)      # a launcher's number, or UserError naming it

MindSpore 2.10 reads its log settings when it is imported and raises a ValueError from inside the import for a
malformed one (GLOG_v=abc). `vit_ms/__init__.py` runs `refuse_bad_mindspore_environment` first, so every command
(train.py, eval.py, infer.py, python -m vit_ms.*) stops with the variable named before MindSpore loads. No
MindSpore import here.
"""
import os
import re
import sys
from typing import List, Mapping, Optional

from .errors import UserError

# MindSpore's log levels (mindspore/log.py _gloglevel_to_name): 0 DEBUG, 1 INFO, 2 WARNING, 3 ERROR, 4 CRITICAL
LOG_LEVELS = ("0", "1", "2", "3", "4")
LOG_DIR_CHARACTERS = re.compile(r"^[/0-9a-zA-Z@_\-.:\\]+$")  # what MindSpore's log folder check allows

# Numbers the launchers set (msrun: MS_*, rank-table scripts: RANK_*, DEVICE_ID), with the least each can be.
LAUNCH_INTS = {"DEVICE_ID": 0, "RANK_ID": 0, "RANK_SIZE": 1, "MS_WORKER_NUM": 1, "MS_LOCAL_WORKER": 1,
               "MS_SCHED_PORT": 1}


def mindspore_environment_problems(environ: Mapping[str, str]) -> List[str]:
    """What MindSpore's import would refuse in `environ`'s log settings, one sentence each ([]: nothing)."""
    problems = []
    for name in ("GLOG_v", "GLOG_stderrthreshold"):
        value = environ.get(name)
        if value and value.strip() not in LOG_LEVELS:
            problems.append(f"{name}={value!r} must be a MindSpore log level: 0 (DEBUG), 1 (INFO), 2 (WARNING), "
                            f"3 (ERROR) or 4 (CRITICAL)")
    to_stderr = (environ.get("GLOG_logtostderr") or "").strip()
    if to_stderr and to_stderr not in ("0", "1"):
        problems.append(f"GLOG_logtostderr={environ['GLOG_logtostderr']!r} must be 1 (log to the terminal) or 0 "
                        f"(log to files in GLOG_log_dir)")
    if to_stderr == "0":
        log_dir = (environ.get("GLOG_log_dir") or "").strip()
        if not log_dir:
            problems.append("GLOG_logtostderr=0 sends MindSpore's log to files, but GLOG_log_dir is not set; set "
                            "it to a writable folder, or GLOG_logtostderr=1")
        elif not LOG_DIR_CHARACTERS.match(os.path.realpath(log_dir)):
            problems.append(f"GLOG_log_dir={log_dir!r} holds characters MindSpore refuses in its log folder "
                            f"(letters, digits and / @ _ - . : only)")
        else:
            try:
                os.makedirs(log_dir, exist_ok=True)  # what MindSpore's import does with it next
            except OSError as err:
                problems.append(f"GLOG_log_dir={log_dir!r} cannot be created ({err.strerror}); give a writable "
                                f"folder")
    for name, meaning in (("logger_maxBytes", "the size in bytes a log file rotates at"),
                          ("logger_backupCount", "how many rotated log files are kept")):
        value = environ.get(name)  # read with int() whether or not the log goes to files
        if value and not value.strip().isdigit():
            problems.append(f"{name}={value!r} must be a whole number ({meaning})")
    return problems


def refuse_bad_mindspore_environment(environ: Optional[Mapping[str, str]] = None) -> None:
    """Exit 2 with one paragraph when MindSpore's import would fail on `environ` (default: os.environ)."""
    problems = mindspore_environment_problems(os.environ if environ is None else environ)
    if problems:
        print(f"error: MindSpore cannot start with this environment: {'; '.join(problems)}. Fix or unset each "
              f"variable named, then run again", file=sys.stderr)
        raise SystemExit(2)


def launch_int(environ: Mapping[str, str], name: str, default: int) -> int:
    """The whole number launcher variable `name` holds (`default` when unset); UserError naming it otherwise."""
    if name not in environ:
        return default
    raw = environ[name]
    least = LAUNCH_INTS[name]
    try:
        value = int(raw.strip())
    except ValueError:
        value = None
    if value is None or value < least or (name == "MS_SCHED_PORT" and value > 65535):
        raise UserError(f"environment variable {name}={raw!r} must be a whole number of at least {least}"
                        + (" and at most 65535" if name == "MS_SCHED_PORT" else "")
                        + f" (a launcher sets it: msrun, or a rank-table script for DEVICE_ID, RANK_ID and RANK_SIZE); "
                          f"unset it for a single-device run, or give e.g. {name}={max(least, 0)}")
    return value


def check_launch_environment(environ: Mapping[str, str]) -> None:
    """Every launcher number in `environ` is well formed; UserError naming the first that is not."""
    for name in LAUNCH_INTS:
        launch_int(environ, name, 0)
