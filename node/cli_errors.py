"""Exit codes, the usage error and the plain-text tables shared by every `agora` command module."""

from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input on the command line; printed as one line, exit code 2."""


def table_lines(columns: list[str], rows: list[list[str]], right_from: int | None = None) -> list[str]:
    """A plain-text table: a header and rows, columns padded to their widest cell; columns from
    index `right_from` on are right-aligned (numbers)."""
    widths = [max(len(cell) for cell in column) for column in zip(columns, *rows, strict=True)]

    def line(row: list[str]) -> str:
        cells = (
            cell.rjust(w) if right_from is not None and i >= right_from else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        return "  ".join(cells).rstrip()

    return [line(row) for row in [columns, *rows]]
