"""`python -m wxpush` runs the command line."""

from wxpush.cli import main

raise SystemExit(main())
