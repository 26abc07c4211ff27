"""`python -m license_server` is `python run.py` (worker processes are started this way)."""

import sys

from license_server.cli import main

sys.exit(main())
