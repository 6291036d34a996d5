"""``python -m callq`` — what ``callq up --demo`` uses to run the demo in a child process."""

import sys

from callq.cli import main

sys.exit(main())
