"""How the command line reports user errors and interruptions: one line, naming the file / key and what to do.

* :func:`run_reporting_errors` runs a command; a user error (bad data, config, checkpoint or path, a full disk, a
  read-only folder, a diverged run) prints ``error: <message>`` on stderr and exits with status 2. ``--traceback``
  on the command line or ``LIGHTNING_YOLO_TRACEBACK=1`` shows the full trace instead. Programming errors
  (``TypeError``, ``KeyError``, ...) keep their traceback: they are bugs to report, not input to fix.
* :class:`SuggestingArgumentParser` answers an unknown or misspelt option with one line and the closest valid
  names (``--model.lrr`` -> ``did you mean --model.lr?``), not the 40-line usage text.
* :class:`InterruptNotice` prints, on Ctrl-C or SIGTERM, the last complete checkpoint and the command that resumes
  from it; SIGTERM ends with status 143 (128 + 15), as a clean shutdown, not a crash.
"""

from __future__ import annotations

import difflib
import errno
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import pytorch_lightning as pl
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.cli import LightningArgumentParser
from pytorch_lightning.utilities.exceptions import SIGTERMException

__all__ = [
    "TRACEBACK_ENV",
    "InterruptNotice",
    "check_config_files",
    "SuggestingArgumentParser",
    "is_user_error",
    "one_line",
    "run_reporting_errors",
]

#: Environment variable that makes the command line show full tracebacks (``1``, ``true``, ``yes``).
TRACEBACK_ENV = "LIGHTNING_YOLO_TRACEBACK"

# OSError numbers that are the user's to fix (space, permissions, paths), not bugs.
_USER_OS_ERRNOS = {
    errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT, errno.EISDIR, errno.ENOTDIR, errno.EEXIST,
    errno.EIO, getattr(errno, "EDQUOT", errno.ENOSPC), errno.ENAMETOOLONG,
}  # fmt: skip


def is_user_error(err: BaseException) -> bool:
    """True for the errors a user fixes by changing input: data, config, checkpoint, paths, disk, divergence."""
    if isinstance(err, (ValueError, FloatingPointError, MisconfigurationException)):
        return True
    if isinstance(err, OSError):  # FileNotFoundError, PermissionError, IsADirectoryError, disk full ...
        return err.errno is None or err.errno in _USER_OS_ERRNOS
    if isinstance(err, RuntimeError) and "failed writing" in str(err):  # torch.save on a full disk
        return True
    return False


def one_line(err: BaseException) -> str:
    """The message of ``err`` on one line (continuation lines joined with ``; ``)."""
    text = str(err)
    if isinstance(err, OSError) and err.strerror:  # "[Errno 20] Not a directory: 'x'" -> "x: Not a directory"
        text = f"{err.filename}: {err.strerror}" if err.filename else err.strerror
    if isinstance(err, KeyError):
        text = f"key {text}"
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return "; ".join(lines) or type(err).__name__


def _traceback_wanted(argv: list[str]) -> bool:
    return "--traceback" in argv or os.environ.get(TRACEBACK_ENV, "").lower() in ("1", "true", "yes")


def run_reporting_errors(command: Callable[[list[str]], Any], argv: Sequence[str]) -> Any:
    """Run ``command(argv)`` (``--traceback`` removed); turn user errors into ``error: ...`` and exit status 2.

    Raises:
        SystemExit: 2 after a user error (the original exception is the ``__cause__``, for tests and tools), 143
            after SIGTERM, 130 after Ctrl-C.
    """
    argv = list(argv)
    show_trace = _traceback_wanted(argv)
    argv = [a for a in argv if a != "--traceback"]
    try:
        return command(argv)
    except SIGTERMException as err:  # a SystemExit without a code (status 0) in Lightning: make it 128 + SIGTERM
        raise SystemExit(143) from err
    except KeyboardInterrupt as err:
        if show_trace:
            raise
        print("error: interrupted (Ctrl-C)", file=sys.stderr)
        raise SystemExit(130) from err
    except Exception as err:
        if show_trace or not is_user_error(err):
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)  # the trace: --traceback or LIGHTNING_YOLO_TRACEBACK=1
        raise SystemExit(2) from err


# ----------------------------------------------------------------------------------------------------------------------
# option parsing: one line and a suggestion for unknown options


def check_config_files(argv: Sequence[str]) -> None:
    """Raise for a ``--config`` / ``-c`` file that is not valid YAML, naming the file, line and column (the parser's
    own message names neither)."""
    import yaml

    for i, arg in enumerate(argv):
        if arg in ("--config", "-c") and i + 1 < len(argv):
            path = argv[i + 1]
        elif arg.startswith(("--config=", "-c=")):
            path = arg.split("=", 1)[1]
        else:
            continue
        if not os.path.isfile(path):
            continue  # a missing file, or inline YAML: the parser reports it
        try:
            with open(path, encoding="utf-8-sig") as f:
                yaml.safe_load(f)
        except yaml.MarkedYAMLError as err:
            mark = err.problem_mark or err.context_mark
            where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
            raise ValueError(f"{path}{where}: not valid YAML: {err.problem or err}") from err
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: not a valid YAML config ({type(err).__name__}: {err})") from err

_UNRECOGNIZED = re.compile(r"unrecognized arguments?:\s*(.*)", re.I | re.S)
_UNKNOWN_KEY = re.compile(r"(?:Group '([\w.-]+)' )?does not accept (?:nested )?(?:option|key)s? '([\w.-]+)'", re.I)


def suggest_options(message: str, valid: Sequence[str]) -> str:
    """``" (did you mean --a?)"`` for each unknown ``--option`` named in an argparse ``message``, else ``""``."""
    match = _UNRECOGNIZED.search(message)
    if match:
        tokens = match.group(1).split()
    else:  # a key of a config file: "Subcommand 'fit' does not accept option 'model.lrr'", "Group 'data' does ..."
        tokens = [f"--{group}.{key}" if group else f"--{key}" for group, key in _UNKNOWN_KEY.findall(message)]
    hints = []
    for token in tokens:
        if not token.startswith("--"):
            continue
        name = token.split("=", 1)[0]
        if "." in name:  # a key moved into a nested group: --data.mosaic_prob -> --data.augment.mosaic_prob
            section, tail = name.rsplit(".", 1)
            moved = [v for v in valid if v.startswith(section + ".") and v.endswith("." + tail) and v != name]
            if moved:
                hints.append(f"{name} is now {' or '.join(moved[:3])}")
                continue
        same_depth = [v for v in valid if v.count(".") == name.count(".")]  # --model.lrr: not --model
        close = difflib.get_close_matches(name, same_depth, n=3, cutoff=0.75)
        if not close:  # a partial name (never completed, see SuggestingArgumentParser): --img -> --img_size
            close = [v for v in same_depth if v.startswith(name)][:3]
        if not close and "." in name:  # a misspelt section: compare the last part within all sections
            tail = name.rsplit(".", 1)[1]
            tails = difflib.get_close_matches(tail, [o.rsplit(".", 1)[-1] for o in same_depth], n=3, cutoff=0.8)
            close = [v for v in same_depth if v.rsplit(".", 1)[-1] in tails][:3]
        if close:
            hints.append(f"{name}: did you mean {' or '.join(close)}?")
    return f" ({'; '.join(hints)})" if hints else ""


class SuggestingArgumentParser(LightningArgumentParser):
    """``LightningArgumentParser`` whose errors are one line with the closest valid option names.

    Option names are never completed from a prefix (``allow_abbrev=False``; the subcommand parsers inherit it): with
    argparse's default, ``predict --conf 0.5`` became ``--config 0.5`` and the typo ``--trainer.max_epoch 3`` silently
    set ``max_epochs``. A partial or misspelt name is an error with the closest valid names.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def _option_names(self) -> list[str]:
        names: list[str] = []
        for action in self._actions:
            names += [o for o in action.option_strings if o.startswith("--")]
            choices = getattr(action, "choices", None)
            if isinstance(choices, dict):  # subcommands
                for sub in choices.values():
                    if isinstance(sub, SuggestingArgumentParser):
                        names += sub._option_names()
        return sorted(set(names))

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:
            super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        if not isinstance(parser, SuggestingArgumentParser):
            parser = self
        hint = suggest_options(message, parser._option_names())
        prog = parser.prog.replace(" [options]", "")
        text = " ".join(message.split())  # one line
        sys.stderr.write(f"error: {text}{hint} (all options: {prog} --help)\n")
        self.exit(2)


# ----------------------------------------------------------------------------------------------------------------------
# Ctrl-C / SIGTERM


class InterruptNotice(pl.Callback):
    """On Ctrl-C or SIGTERM during ``fit``: print the last complete checkpoint and the command that resumes from it.

    Progress since that checkpoint (written at the end of each epoch) is lost; resuming from it is exact.

    Args:
        argv: the command line of this run (without the program name), used to write the resume command.
        program: program name shown in the resume command.
    """

    def __init__(self, argv: Sequence[str] | None = None, program: str = "lightning-yolo") -> None:
        self.argv = list(argv) if argv is not None else None
        self.program = program
        self.message: str | None = None

    @staticmethod
    def last_checkpoint(trainer: pl.Trainer) -> str | None:
        """The newest complete ``last.ckpt`` (or best) that a checkpoint callback of ``trainer`` wrote."""
        from pytorch_lightning.callbacks import ModelCheckpoint

        from .callbacks.checkpoints import LastCheckpoint

        found = []
        for cb in trainer.callbacks:
            if isinstance(cb, LastCheckpoint) and cb.best_model_path:
                found.insert(0, cb.best_model_path)
            elif isinstance(cb, ModelCheckpoint):
                found += [p for p in (cb.last_model_path, cb.best_model_path) if p]
        return next((p for p in found if Path(p).is_file()), None)

    def resume_command(self, ckpt: str) -> str:
        args = list(self.argv or [])
        out, skip = [], False
        for a in args:  # drop an earlier --ckpt_path
            if skip:
                skip = False
                continue
            if a == "--ckpt_path":
                skip = True
                continue
            if a.startswith("--ckpt_path="):
                continue
            out.append(a)
        if not out or out[0] != "fit":
            out = ["fit", *out]
        quoted = " ".join(a if re.fullmatch(r"[\w@%+=:,./-]+", a) else repr(a) for a in out)
        return f"{self.program} {quoted} --ckpt_path {ckpt}"

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)) or not trainer.is_global_zero:
            return
        what = "Ctrl-C" if isinstance(exception, KeyboardInterrupt) else "SIGTERM"
        where = f"epoch {trainer.current_epoch}, global step {trainer.global_step}"
        ckpt = self.last_checkpoint(trainer) if trainer.state.fn == "fit" else None
        if ckpt:
            self.message = (
                f"interrupted by {what} at {where}; last complete checkpoint: {ckpt}; resume with: "
                f"{self.resume_command(ckpt)}"
            )
        elif trainer.state.fn == "fit":
            self.message = f"interrupted by {what} at {where}; no checkpoint written yet (first epoch not finished)"
        else:
            self.message = f"interrupted by {what} at {where}"
        print(f"[lightning-yolo] {self.message}", file=sys.stderr, flush=True)
