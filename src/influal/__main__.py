"""``python -m influal``: the same as the ``influal`` command."""

import sys

from .cli import main

sys.exit(main())
