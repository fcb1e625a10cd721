"""``python -m shiftcheck`` is the ``shiftcheck`` console script."""

from shiftcheck.cli import main

raise SystemExit(main())
