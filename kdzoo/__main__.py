"""``python -m kdzoo ...`` is the ``kdzoo`` console script (:mod:`kdzoo.cli`)."""

import sys

from kdzoo.cli import main

sys.exit(main())
