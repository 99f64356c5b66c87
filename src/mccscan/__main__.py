"""`python -m mccscan` is the same as the `mccscan` command."""

import sys

from mccscan.cli import main

sys.exit(main())
