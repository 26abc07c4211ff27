#!/usr/bin/env python3
"""Entry point: `python run.py` serves; `python run.py --help` lists the subcommands."""

import sys

from license_server.cli import main

if __name__ == "__main__":
    sys.exit(main())
