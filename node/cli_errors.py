"""Exit codes and the usage error shared by every `agora` command module."""

from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input on the command line; printed as one line, exit code 2."""
