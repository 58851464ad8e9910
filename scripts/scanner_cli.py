"""`scanner` without an installed entry point (a bare GPU machine): python3 scripts/scanner_cli.py ARGS."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scanner.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.argv[0] = "scanner"
    main()
