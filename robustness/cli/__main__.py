"""``python -m robustness.cli``: the ``robustness`` command."""

import sys

from robustness.cli import main

if __name__ == "__main__":
    sys.exit(main())
