"""The command boundary: every failure is one ``error:`` line and a documented exit code.

A failed run: problems of the command line (unknown keys, bad values) stop the command before
Hydra creates a run folder (``cli/validate.py``); a problem found later (a missing data file, a
checkpoint of another model, an exception of Lightning, Hydra instantiation or torch) is printed
as one ``error:`` line and recorded in the run folder, in ``error.txt`` (with the traceback of an
unexpected one) and in the run's log file (``<task>.log``). Ctrl-C is one ``interrupted:`` line.
Sweep jobs write ``FAILED.txt``.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from cropformer.run.setup import in_multirun, output_dir
from cropformer.utils.errors import Interrupted, UserError
from cropformer.utils.pylogger import RankedLogger, file_logger

log = RankedLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


#: exit codes of train.py / eval.py / predict.py / make train (README "Exit codes")
EXIT_FAILED = 1  # an unexpected failure (a bug or the environment): the line names the exception
EXIT_USER = 2  # bad input: config value, missing file, a checkpoint that does not fit
EXIT_UNREADABLE = 3  # predict.py finished, but some input files could not be read (named)
EXIT_INTERRUPTED = 130  # Ctrl-C: the line says what was saved and how to resume


def error_line(err: BaseException) -> tuple[str, int]:
    """The one console line of a failure and its exit code.

    Hydra's instantiation errors (``Error in call to target ...``, several lines) are reduced to
    the config key that failed and the underlying message; Lightning's configuration errors count
    as the user's to fix.
    """
    from hydra.errors import InstantiationException

    from cropformer.training.module import NonFiniteLossError

    user = (UserError, FileNotFoundError, NonFiniteLossError, MissingMandatoryValue)
    if isinstance(err, user):
        return " ".join(str(err).split()), EXIT_USER
    code = EXIT_FAILED
    cause: BaseException = err
    key = None
    if isinstance(err, InstantiationException):
        text = str(err)
        if "full_key:" in text:
            key = text.rsplit("full_key:", 1)[1].strip().split()[0]
        code = EXIT_USER  # a value in the config the target does not take
        while cause.__cause__ is not None and isinstance(cause, InstantiationException):
            cause = cause.__cause__
    if type(cause).__name__ in ("MisconfigurationException", "UserError"):
        code = EXIT_USER
    message = " ".join(str(cause).split()).rstrip(".") or type(cause).__name__
    if isinstance(cause, InstantiationException):  # no chained cause: strip Hydra's framing
        message = message.split(" full_key:")[0]
    kind = type(cause).__name__
    where = f"cannot build `{key}` ({kind}): " if key else f"{kind}: "
    hint = f"; check the {key}.* values" if key else ""
    return f"{where}{message}{hint}", code


def user_errors_exit(func: F) -> F:
    """The command boundary: every failure is one ``error: ...`` line and a documented exit code.

    Errors the user can fix exit with 2; any other exception (Lightning, Hydra instantiation,
    torch at start-up) is one line too, exit 1, with the traceback kept in the run folder's
    ``error.txt`` (``HYDRA_FULL_ERROR=1`` shows it on the console instead). Ctrl-C gives one
    ``interrupted: ...`` line saying what was saved and how to resume (exit 130).

    Inside a multirun, any failure is recorded in the job's directory (``FAILED.txt``) and the job
    returns NaN so the rest of the sweep goes on.
    """

    @functools.wraps(func)
    def wrapper(cfg: Any) -> Any:
        try:
            return func(cfg)
        except Interrupted as err:
            _report_interrupt(cfg, str(err))
        except KeyboardInterrupt:
            _report_interrupt(cfg, "before any result was saved; run the command again")
        except Exception as err:
            if in_multirun():
                _record_failure(cfg, err)
                return math.nan
            if os.environ.get("HYDRA_FULL_ERROR") == "1" and not isinstance(err, UserError):
                raise
            line, code = error_line(err)
            details = None if code == EXIT_USER and isinstance(err, UserError) else err
            where = _record_error(cfg, f"error: {line}", details)
            if code == EXIT_FAILED and where is not None:
                line += f" (traceback in {where})"
            print(f"error: {line}", file=sys.stderr, flush=True)
            sys.exit(code)

    return wrapper  # type: ignore[return-value]


def record_failure_line(cfg: Any, err: BaseException) -> None:
    """``error.txt`` in ``cfg``'s run folder (if it exists) for a failure the caller re-raises."""
    if isinstance(err, Interrupted):
        _record_error(cfg, f"interrupted: {err}", None)
        return
    line, code = error_line(err)
    _record_error(cfg, f"error: {line}", None if code == EXIT_USER else err)


def _report_interrupt(cfg: Any, message: str) -> None:
    line = f"interrupted: {message}"
    _record_error(cfg, line, None)
    print(f"\n{line}", file=sys.stderr, flush=True)
    sys.exit(EXIT_INTERRUPTED)


def _record_error(cfg: Any, line: str, err: BaseException | None) -> Path | None:
    """A single run's error line (and traceback) in its folder (``error.txt``) and its log file.

    Returns the file written, or None when the run has no folder (nothing ran).
    """
    try:
        path = Path(str(cfg.paths.output_dir)).expanduser().resolve()
    except Exception:  # outside Hydra, or no run folder in this config
        return None
    if not path.is_dir():
        return None
    text = line + "\n"
    if err is not None:
        text += "\n" + "".join(traceback.format_exception(err))
    try:
        (path / "error.txt").write_text(text)
        file_logger().error(text.rstrip())
    except Exception:  # the report must never hide the original error
        return None
    return path / "error.txt"


def _record_failure(cfg: DictConfig, err: BaseException) -> None:
    try:
        out = output_dir(cfg)
        (out / "FAILED.txt").write_text("".join(traceback.format_exception(err)))
        log.error(f"sweep job failed ({type(err).__name__}: {err}); see {out / 'FAILED.txt'}")
    except Exception:  # the failure report must never hide the original error
        print(f"sweep job failed: {err}", file=sys.stderr)
