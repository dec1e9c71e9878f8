"""``python -m dsn``: the command-line interface (see dsn/cli.py)."""

from dsn.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
