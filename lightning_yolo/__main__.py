"""``python -m lightning_yolo`` is the ``lightning-yolo`` command."""

from .commands.cli import main

if __name__ == "__main__":
    main()
