"""python -m yuefu: the same as the yuefu command."""

import sys

from yuefu.cli import main

sys.exit(main())
