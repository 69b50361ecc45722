"""`python -m emphasize ...` (and `accelerate launch -m emphasize ...`) runs the command line."""

import sys

from emphasize.cli import main

sys.exit(main())
