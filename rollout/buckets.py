"""Initial-letter buckets: the unit that cohorts are balanced over.

The initial is the first character of the mailbox's local part, case-folded and
with accents stripped (``Ärger`` → ``a``). Digits share one bucket that sorts
before ``a``; every other character shares one bucket after ``z``. The same
folding applied to the whole local part gives the ``sort_key`` that two-letter
splits (``sa–sm``) and range membership use.
"""

from __future__ import annotations

import unicodedata

DIGITS = "0"  # sorts before "a"
OTHER = "~"  # sorts after "z"
BUCKETS = (DIGITS, *"abcdefghijklmnopqrstuvwxyz", OTHER)
SORT_KEY_LENGTH = 32

# Letters that Unicode does not decompose into a base letter plus accent.
_TRANSLITERATE = {"æ": "a", "ø": "o", "œ": "o", "ł": "l", "đ": "d", "ð": "d", "þ": "t", "ı": "i", "ŋ": "n"}


def fold_char(char: str) -> str:
    """One character of a local part → ``0-9``, ``a-z`` or ``~``."""
    if "0" <= char <= "9":
        return char
    lowered = char.casefold()
    lowered = _TRANSLITERATE.get(lowered, lowered)
    base = unicodedata.normalize("NFKD", lowered)[:1]
    if "a" <= base <= "z":
        return base
    if base.isdigit() and base.isascii():
        return base
    return OTHER


# Fast path for the common all-ASCII local part: one str.translate call.
_ASCII_FOLD = {c: fold_char(chr(c)) for c in range(128)}


def sort_key(local_part: str) -> str:
    """The folded local part, truncated: what cohort ranges are cut on."""
    head = local_part[:SORT_KEY_LENGTH]
    if head.isascii():
        return head.translate(_ASCII_FOLD) or OTHER
    return "".join(fold_char(c) for c in head) or OTHER


def bucket_of(local_part: str) -> str:
    """The initial bucket of a local part: ``0`` (digits), ``a``…``z`` or ``~`` (other)."""
    return bucket_of_key(sort_key(local_part[:1]))


def bucket_of_key(key: str) -> str:
    """The initial bucket of an already folded sort key."""
    return DIGITS if key[0].isdigit() else key[0]


def bucket_label(bucket: str) -> str:
    return {DIGITS: "0-9", OTHER: "other"}.get(bucket, bucket)
