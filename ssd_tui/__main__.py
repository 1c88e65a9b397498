import sys

from ssd_tui.cli import main

sys.exit(main())
