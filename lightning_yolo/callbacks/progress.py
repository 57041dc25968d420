"""A training progress bar of a detection tool's width: epoch, the loss components, instances and input size.

Lightning's ``TQDMProgressBar`` appends every metric logged with ``prog_bar=True`` to the bar, each loss twice
(``_step`` and ``_epoch``) plus the validation mAP: about 390 characters that wrap over five lines of a terminal.
:class:`DetectionProgressBar` prints a header above each epoch's bar and the values in fixed columns under it, as
detection tools do::

      epoch    box    obj    cls   loss  inst  size
       1/24 0.0318  0.436 0.0449  0.513    21   128: |████████████████| 100/100 [00:58<00:00]
       2/24 0.0302  0.412 0.0441  0.486    17   128: |█████████       | 60/100 [00:35<00:23]

Each epoch's last line stays; at most 80 characters with up to 999 batches per epoch, however wide the terminal; the
validation mAP is printed at the end of the run (and is in ``results.csv``). Messages logged while a bar is shown (the time-budget plan, warnings of the
package) are written above the bar, never glued onto its end (the CLI routes Lightning's log through ``tqdm.write``).
"""

from __future__ import annotations

import math
import sys
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm

__all__ = ["DetectionProgressBar", "BAR_COLUMNS"]

#: ``(logged name, column header, format)`` of the values shown on the training bar; the module logs each loss
#: component per step and per epoch (``train/box_step``, ``train/box_epoch``): the bar shows the step value.
BAR_COLUMNS = (
    ("train/box", "box", "{:6.3g}"),
    ("train/obj", "obj", "{:6.3g}"),
    ("train/cls", "cls", "{:6.3g}"),
    ("train/loss", "loss", "{:6.3g}"),
    ("train/instances", "inst", "{:5.0f}"),
    ("train/img_size", "size", "{:5.0f}"),
)

_EPOCH_WIDTH = 7


class DetectionProgressBar(TQDMProgressBar):
    """``TQDMProgressBar`` whose training bar shows :data:`BAR_COLUMNS` under a header line, in at most 80 columns.

    Validation, test and predict bars are Lightning's (they carry no metrics). Args as ``TQDMProgressBar``.
    """

    #: the training bar: the values (as the description), the bar, batches and times; no rate, no postfix
    TRAIN_BAR_FORMAT = "{desc}|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]"  # tqdm adds ": " to desc

    #: the widest the training line gets (the bar itself shrinks to fit)
    MAX_WIDTH = 80

    def header(self) -> str:
        """The column header printed above each epoch's bar."""
        widths = [len(fmt.format(0.0)) for _, _, fmt in BAR_COLUMNS]
        return f"{'epoch':>{_EPOCH_WIDTH}}" + "".join(f" {h:>{w}}" for (_, h, _), w in zip(BAR_COLUMNS, widths))

    def values(self, trainer: pl.Trainer) -> str:
        """The epoch and the latest value of each of :data:`BAR_COLUMNS` (blank until logged), aligned to the header."""
        metrics = trainer.progress_bar_metrics
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        epoch = f"{trainer.current_epoch + 1}/{total}" if total else str(trainer.current_epoch + 1)
        out = [f"{epoch:>{_EPOCH_WIDTH}}"]
        for key, _, fmt in BAR_COLUMNS:
            value = metrics.get(f"{key}_step", metrics.get(key))
            width = len(fmt.format(0.0))
            number = float(value) if value is not None else math.nan
            text = fmt.format(number) if math.isfinite(number) else ""
            if len(text) > width:  # 12345.6 -> 1.2e+04: the columns stay aligned
                text = f"{number:.{max(0, width - 6)}e}"
            out.append(" " + text.rjust(width))
        return "".join(out)

    def init_train_tqdm(self) -> Any:
        # Lightning's, with this format and width (set before the first draw)
        return Tqdm(
            desc="",
            position=2 * self.process_position,
            disable=self.is_disabled,
            leave=True,
            ncols=min(self.MAX_WIDTH, _terminal_width(sys.stdout)),
            file=sys.stdout,
            smoothing=0,
            bar_format=self.TRAIN_BAR_FORMAT,
        )

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        return {}  # no postfix: the values are the description (see values()), the mAP is printed at the end

    def on_train_start(self, *args: Any) -> None:
        super().on_train_start(*args)
        self._last_line: str | None = None
        if not self.train_progress_bar.disable:
            self.train_progress_bar.write(self.header())

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        # Lightning's own version first shows "Epoch N" on the bar: not here
        bar = self.train_progress_bar
        total = self.total_train_batches
        bar.set_description(self.values(trainer), refresh=False)
        bar.reset(total=None if total is None or math.isinf(total) else int(total))
        if not bar.disable and getattr(self, "_last_line", None):  # the finished epoch's line stays above the bar
            bar.write(self._last_line)
            self._last_line = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if not self.train_progress_bar.disable:
            self._last_line = str(self.train_progress_bar)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        bar = self.train_progress_bar
        n = batch_idx + 1
        if bar is None or bar.disable or not (n % self.refresh_rate == 0 or n == bar.total):
            return
        bar.set_description(self.values(trainer), refresh=False)
        bar.n = n
        bar.refresh()  # one redraw per update (Lightning's draws twice: the count, then the postfix)


def _terminal_width(fp: Any) -> int:
    """Columns of the terminal ``fp`` writes to (80 when it is not a terminal)."""
    import shutil

    try:
        if fp is not None and hasattr(fp, "isatty") and fp.isatty():
            return shutil.get_terminal_size((80, 24)).columns
    except (OSError, ValueError):
        pass
    return 80
