"""``python -m llamahomed`` is the same as the ``llamahomed`` command."""

import sys

from llamahomed.cli import main

sys.exit(main())
