"""``python -m cli`` runs the ``t2sql`` command line."""

import sys

from cli import main

sys.exit(main())
