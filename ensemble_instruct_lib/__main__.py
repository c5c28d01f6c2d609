"""`python -m ensemble_instruct_lib ...`: see `cli.py`."""

from .cli import main

raise SystemExit(main())
