"""``python -m explorer.analysis.agreement``: run the study (see :func:`explorer.analysis.agreement.main`)."""

import sys

from explorer.analysis.agreement.study import main

sys.exit(main())
