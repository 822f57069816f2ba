"""`python -m edgerobust.runner COMMAND ...` / `python3 -m edgerobust_runner COMMAND ...`."""
import sys

from .main import main

sys.exit(main())
