"""``python -m explorer.analysis.intervention_study``."""

import sys

from explorer.analysis.intervention_study import main

sys.exit(main())
