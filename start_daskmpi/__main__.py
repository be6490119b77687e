"""``python -m start_daskmpi``: the same command as start_daskmpi.py."""
import sys

from start_daskmpi.cli import main

if __name__ == "__main__":  # a nanny's worker process re-imports this module
    sys.exit(main())
