"""Address validation and normalisation (pure)."""

import pytest

from rollout.addresses import AddressError, parse_address


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ("Anna@Example.COM", "Anna@example.com"),
        ("info@bücher.de", "info@xn--bcher-kva.de"),
        ("  bob@example.org ", "bob@example.org"),
        ("o'neil+news@example.org", "o'neil+news@example.org"),
        ("jürgen@example.de", "jürgen@example.de"),  # SMTPUTF8 local parts are kept
        ("x@example.org.", "x@example.org"),
    ],
)
def test_parse_address_normalises_the_domain_only(raw: str, text: str) -> None:
    """The domain is lower-cased and IDNA-encoded; the local part stays as written."""
    assert parse_address(raw).text == text


def test_address_key_is_case_insensitive() -> None:
    """Two spellings of one mailbox share a key."""
    assert parse_address("Anna@EXAMPLE.com").key == parse_address("anna@example.com").key


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "empty"),
        ("no-at-sign", "no @"),
        ("@example.com", "empty local part"),
        ("a b@example.com", "space"),
        ("a\r\nBcc: x@example.com", "control"),
        ("a..b@example.com", "double dot"),
        ("a@localhost", "not a valid domain"),
        ("a@exa_mple.com", "not a valid domain"),
        ("a@-bad.com", "not a valid domain"),
        ("x" * 65 + "@example.com", "longer than 64"),
    ],
)
def test_parse_address_rejects_with_a_reason(raw: str, why: str) -> None:
    """Bad addresses are refused with a reason an operator can act on."""
    with pytest.raises(AddressError, match=why):
        parse_address(raw)
