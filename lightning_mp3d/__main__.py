"""``python -m lightning_mp3d fit --config ...``: the same entry as the ``lightning`` command."""

from lightning_mp3d.cli import main

if __name__ == "__main__":
    main()
