"""``python -m thqa``: the ``thqa`` command."""
import sys

from thqa.cli.app import main

sys.exit(main())
