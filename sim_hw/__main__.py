"""``python -m sim_hw serve --pty | --tcp PORT | --usb``, ``python -m sim_hw set --control PORT``.
"""

import sys

from sim_hw.cli import main

sys.exit(main())
