import sys

from miroir.cli import main

sys.exit(main())
