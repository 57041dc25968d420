"""The ``lightning-yolo`` command line: :mod:`.cli` (LightningCLI: fit / validate / test / predict, and the dispatcher),
:mod:`.export`, :mod:`.anchors`, :mod:`.convert` (argparse subcommands that are not a Trainer run)."""
