import sys

from qrs_cli.main import main

sys.exit(main())
