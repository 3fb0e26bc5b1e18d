"""The command boundary: errors a user can fix become one ``error:`` line and exit code 2.

A failed run: problems of the command line (unknown keys, bad values) stop the command before
Hydra creates a run folder (``cli/validate.py``); a problem found later (a missing data file, a
checkpoint of another model) is printed as one ``error:`` line and recorded in the run folder,
in ``error.txt`` and in the run's log file (``<task>.log``). Sweep jobs write ``FAILED.txt``.
"""

from __future__ import annotations

import functools
import math
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from cropformer.run.setup import in_multirun, output_dir
from cropformer.utils.errors import UserError
from cropformer.utils.pylogger import RankedLogger, file_logger

log = RankedLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


def user_errors_exit(func: F) -> F:
    """Turn the errors a user can fix into one ``error: ...`` line and exit code 2.

    Inside a multirun, any failure is recorded in the job's directory (``FAILED.txt``) and the job
    returns NaN so the rest of the sweep goes on.
    """

    @functools.wraps(func)
    def wrapper(cfg: DictConfig) -> Any:
        from cropformer.training.module import NonFiniteLossError

        try:
            return func(cfg)
        except (UserError, FileNotFoundError, NonFiniteLossError, MissingMandatoryValue) as err:
            if in_multirun():
                _record_failure(cfg, err)
                return math.nan
            print(f"error: {err}", file=sys.stderr, flush=True)
            _record_error(cfg, err)
            sys.exit(2)
        except Exception as err:
            if in_multirun():
                _record_failure(cfg, err)
                return math.nan
            raise

    return wrapper  # type: ignore[return-value]


def _record_error(cfg: DictConfig, err: BaseException) -> None:
    """A single run's error line in its folder (``error.txt``) and its log file, if it has them."""
    try:
        path = Path(str(cfg.paths.output_dir)).expanduser().resolve()
        if path.is_dir():
            (path / "error.txt").write_text(f"error: {err}\n")
            file_logger().error(f"error: {err}")
    except Exception:  # no run folder to record in (e.g. outside Hydra): the console has it
        pass


def _record_failure(cfg: DictConfig, err: BaseException) -> None:
    try:
        out = output_dir(cfg)
        (out / "FAILED.txt").write_text("".join(traceback.format_exception(err)))
        log.error(f"sweep job failed ({type(err).__name__}: {err}); see {out / 'FAILED.txt'}")
    except Exception:  # the failure report must never hide the original error
        print(f"sweep job failed: {err}", file=sys.stderr)
