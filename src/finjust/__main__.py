import sys

from finjust.cli.launch import entry

sys.exit(entry())
