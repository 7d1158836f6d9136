"""`python -m inventory` and the `inventory` console command."""

from __future__ import annotations

from inventory.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
