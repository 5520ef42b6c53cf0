"""``python -m server_under_test``: the reference server (see reference.py)."""

import sys

from server_under_test.reference import main

sys.exit(main())
