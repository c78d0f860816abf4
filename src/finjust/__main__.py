import sys

from finjust.cli.main import main

sys.exit(main())
