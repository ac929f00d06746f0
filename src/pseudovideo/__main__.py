"""Entry point for ``python -m pseudovideo``."""

from pseudovideo.cli import main

raise SystemExit(main())
