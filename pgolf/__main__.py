import sys

from pgolf.running.cli import main

sys.exit(main())
