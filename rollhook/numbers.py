"""Numbers a person or a client wrote (a query parameter, an environment setting)."""

from __future__ import annotations


def whole_number(text: str, low: int, high: int) -> int | None:
    """``text`` as a number from ``low`` to ``high`` written in ASCII digits, or None.

    (str.isdigit takes '²' and int() refuses it; int() takes '\u0661' and ' 5'.)
    """
    if not (text.isascii() and text.isdigit()):
        return None
    significant = text.lstrip("0") or "0"
    if len(significant) > len(str(high)):  # and int() never sees thousands of digits
        return None
    number = int(significant)
    return number if low <= number <= high else None
