"""Initial-letter buckets and sort keys (pure)."""

import pytest

from rollout.buckets import BUCKETS, bucket_label, bucket_of, sort_key


@pytest.mark.parametrize(
    ("local", "bucket"),
    [
        ("anna", "a"),
        ("Anna", "a"),
        ("Ärger", "a"),
        ("émile", "e"),
        ("Øystein", "o"),
        ("æsir", "a"),
        ("ßtraße", "s"),  # ß case-folds to ss
        ("łukasz", "l"),
        ("1und1", "0"),
        ("9lives", "0"),
        ("_office", "~"),
        ("+tag", "~"),
        ("ïvan", "i"),
        ("Ωmega", "~"),  # not a Latin letter: the bucket after z
        ("中文", "~"),
        ("ｆullwidth", "f"),  # NFKD folds full-width letters
    ],
)
def test_bucket_of_folds_case_and_accents(local: str, bucket: str) -> None:
    """The initial is case-folded and accent-stripped; digits before a, others after z."""
    assert bucket_of(local) == bucket


def test_bucket_order_puts_digits_first_and_other_last() -> None:
    """Buckets sort digits, a…z, other: the order cohorts are laid out in."""
    assert list(BUCKETS) == sorted(BUCKETS)
    assert BUCKETS[0] == "0" and BUCKETS[-1] == "~" and len(BUCKETS) == 28
    assert bucket_label("0") == "0-9" and bucket_label("~") == "other" and bucket_label("q") == "q"


def test_sort_key_orders_two_letter_prefixes_like_the_alphabet() -> None:
    """Sort keys fold every character, so 'Säge' sorts among 'sa…' and before 'sb…'."""
    assert sort_key("Säge") == "sage"
    assert sort_key("sa") < sort_key("Säge") < sort_key("sb")
    assert sort_key("a.b-c") == "a~b~c"
    assert len(sort_key("x" * 100)) == 32
