"""Ablations and evolution on the user's data, the library of ``lightning-yolo ablate`` and ``lightning-yolo evolve``
(their command lines: :mod:`lightning_yolo.commands.ablate`, :mod:`lightning_yolo.commands.evolve`).

* :mod:`.switches` — the paper's bag of freebies / specials as named switches, and config editing by dotted path;
* :mod:`.runner` — the study folder, one ``fit`` process per run, resume, locks for several workers;
* :mod:`.stats` — differences paired by seed with Student-t confidence intervals;
* :mod:`.ablate` / :mod:`.evolve` — the variants and the genetic search, their tables and plots.
"""

from .stats import PairedDiff, paired_difference, t_quantile
from .switches import SWITCHES, Switch

__all__ = ["SWITCHES", "Switch", "PairedDiff", "paired_difference", "t_quantile"]
