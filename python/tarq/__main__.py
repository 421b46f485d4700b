import sys

from tarq.cli.main import main

sys.exit(main())
