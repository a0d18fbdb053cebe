"""`python -m supervisor`: the same as the registry-supervisor command."""

from supervisor.cli import main

raise SystemExit(main())
