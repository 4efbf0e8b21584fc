"""``python -m thqa.cli``: the ``thqa`` command."""
import sys

from thqa.cli.app import main

sys.exit(main())
