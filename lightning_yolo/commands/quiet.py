"""What the command line does not print: Lightning's messages that carry no information for a user of this package.

Real warnings (a dataset problem, a close-mosaic covering the whole run, a diverging loss, ...) stay. Silenced:

* log lines (:data:`QUIET_LOG_LINES`): Lightning's litlogger advertisement and its "Loading `train_dataloader` to
  estimate number of stepping batches." (the package asks for the schedule's length itself);
* in the model summary, the ``FLOPs`` column and the ``Total Flops`` line: Lightning counts FLOPs only with an
  ``example_input_array``, so for this package they always read 0 (the README lists each model's GFLOPs);
* warnings (:data:`QUIET_WARNINGS`): the number of training batches being smaller than ``log_every_n_steps`` (the
  epoch means are logged whatever the interval) and Lightning's own use of a deprecated torch API.

Lightning's log lines that remain are written through ``tqdm.write``, so they appear above a progress bar instead of
glued onto its end (``...0.71it/s]time budget 180 s: ...``).
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Iterator

__all__ = ["QUIET_LOG_LINES", "QUIET_WARNINGS", "quiet_lightning", "strip_flops"]

#: Messages of Lightning's ``rank_zero_info`` that are dropped (regular expressions, matched at the start).
QUIET_LOG_LINES = (
    r".*Tip: For seamless cloud logging",  # litlogger advertisement, on every Trainer
    r"Loading `train_dataloader` to estimate number of stepping batches",
)

#: Warnings that no user setting causes or that say nothing to a user, silenced in every subcommand.
QUIET_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",
    r"The number of training batches \(\d+\) is smaller than the logging interval",
)

#: The loggers Lightning writes those messages through.
_RANK_ZERO_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero")
_SUMMARY_LOGGER = "pytorch_lightning.callbacks.model_summary"


def strip_flops(table: str) -> str:
    """Lightning's model-summary ``table`` without its ``FLOPs`` column and ``Total Flops`` line."""
    lines = [ln for ln in table.split("\n") if not ln.rstrip().endswith("Total Flops")]
    header = next((ln for ln in lines if " | FLOPs" in ln), None)
    if header is None:
        return "\n".join(lines)
    start = header.index(" | FLOPs")
    end = header.find(" | ", start + 3)
    out = []
    for ln in lines:
        if set(ln.strip()) == {"-"}:  # the rules under the header and the rows
            out.append(ln[: len(ln) - ((end if end >= 0 else len(header)) - start)])
        elif ln.startswith(" ") or " | " in ln:
            out.append((ln[:start] + (ln[end:] if end >= 0 else "")).rstrip())
        else:
            out.append(ln)
    return "\n".join(out)


class _QuietFilter(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.patterns = [re.compile(p) for p in QUIET_LOG_LINES]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(p.match(message.strip()) for p in self.patterns):
            return False
        if "Total Flops" in message:
            record.msg, record.args = strip_flops(message), None
        return True


def _above_progress_bars() -> contextlib.AbstractContextManager:
    """Route the console handler of Lightning's logger through ``tqdm.write`` (only where Lightning installed its own
    handler: with handlers on the root logger, e.g. under pytest, records go there unchanged)."""
    import sys

    from tqdm.contrib.logging import logging_redirect_tqdm

    logger = logging.getLogger("pytorch_lightning")
    console = [
        h for h in logger.handlers if isinstance(h, logging.StreamHandler) and h.stream in (sys.stdout, sys.stderr)
    ]
    return logging_redirect_tqdm([logger]) if console and not logger.propagate else contextlib.nullcontext()


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Within the block: Lightning's :data:`QUIET_LOG_LINES` dropped, the model summary without FLOPs and the
    :data:`QUIET_WARNINGS` ignored."""
    quiet = _QuietFilter()
    loggers = [logging.getLogger(name) for name in (*_RANK_ZERO_LOGGERS, _SUMMARY_LOGGER)]
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        with warnings.catch_warnings(), _above_progress_bars():
            for message in QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)
