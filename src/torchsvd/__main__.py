"""``python -m torchsvd``: the command line of :mod:`torchsvd.cli`."""

from torchsvd.cli import main

if __name__ == "__main__":
    main()
