import sys

from vidan.cli import main

sys.exit(main())
