"""User errors of the launcher as one line; tracebacks only for bugs.

A user error (a bad override or key, a missing file, a layout that does not fit, a damaged
checkpoint, a rejected submission, a run directory another trainer holds) is printed as
``error: <where>: <problem>`` and exits with status 2 (a failed stage: status 1, its own output
above says why; a run stopped by a signal, resumable: 75); anything else is a bug and keeps its
traceback. Hydra's own composition errors (unknown key, unknown group option,
unparsable override) come out the same way, the override at fault named.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Sequence

USER_ERROR_STATUS = 2
STAGE_FAILED_STATUS = 1


def _user_error_types() -> tuple[type[BaseException], ...]:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from nemo_neko.utils.lock import LockedError

    return (
        LockedError,
        HydraException,
        OmegaConfBaseException,
        ValueError,  # ConfigError, LayoutError, RecordError, CheckpointError
        FileNotFoundError,
        NotADirectoryError,
        IsADirectoryError,
        PermissionError,
    )


def override_of(key: str | None, overrides: Sequence[str]) -> str | None:
    """The command-line override that sets ``key`` (or a key above or below it), if any."""
    if not key:
        return None
    for override in overrides:
        name = override.split("=", 1)[0].lstrip("+~")
        if name == key or key.startswith(name + ".") or name.startswith(key + "."):
            return override
    return None


def _leading_key(problem: str) -> str | None:
    match = re.match(r"([a-z_][a-z0-9_]*(?:\.[a-z0-9_]+)+)\b", problem)
    return match.group(1) if match else None


def config_error_line(error, overrides: Sequence[str]) -> str:
    """A :class:`~nemo_neko.config.ConfigError` with the override at fault as its source."""
    override = override_of(error.key or _leading_key(error.problem), overrides)
    source = f"override {override!r}" if override else error.source
    return f"{source}: {error.key}: {error.problem}" if error.key else f"{source}: {error.problem}"


def one_line(error: BaseException, overrides: Sequence[str] = ()) -> str:
    """The one-line message of a user error (see the module docstring)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from nemo_neko.config import ConfigError, schema_problem

    if isinstance(error, ConfigError):
        return config_error_line(error, overrides)
    cause = error.__cause__
    if isinstance(error, HydraException) and isinstance(cause, OmegaConfBaseException):
        key, problem = schema_problem(cause)
        named = re.search(r"override '?([^' ]+=[^']*)'?", str(error))
        override = override_of(key, overrides) or (named.group(1) if named else None)
        where = f"override {override!r}" if override else "the composed config"
        return f"{where}: {key}: {problem}" if key else f"{where}: {problem}"
    text = str(error).split("Config search path")[0]  # Hydra appends its search path
    return " ".join(text.split())


def report_user_errors(main: Callable[[], int], overrides: Sequence[str] | None = None) -> int:
    """Run ``main``; a user error becomes one line on stderr and exit status 2, a failed stage
    one line and status 1; any other exception propagates with its traceback.

    Args:
        main: what to run; returns the exit status.
        overrides: the command-line overrides, to name the one at fault (default ``sys.argv``).
    """
    from nemo_neko.launch.local import StageFailed
    from nemo_neko.launch.slurm import SlurmError

    overrides = sys.argv[1:] if overrides is None else overrides
    try:
        return main()
    except StageFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return STAGE_FAILED_STATUS
    except (*_user_error_types(), SlurmError) as error:
        print(f"error: {one_line(error, overrides)}", file=sys.stderr)
        return USER_ERROR_STATUS


def run_reporting_errors(main: Callable[[], int]) -> int:
    """:func:`report_user_errors` around a Hydra main: Hydra's own errors (composition, parsing)
    are let through to us (``HYDRA_FULL_ERROR``) instead of being printed by Hydra."""
    previous = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        return report_user_errors(main)
    finally:
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous
