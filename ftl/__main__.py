"""``python -m ftl``: the same command line as the ``ftl`` script."""

from ftl.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
