"""``python -m vocaseg`` runs the command line (also what ``torchrun -m vocaseg train`` uses)."""

import sys

from vocaseg.cli.main import main

sys.exit(main())
