"""``python -m explorer.bench.dashboard_load ...``"""

import sys

from .cli import main

sys.exit(main())
