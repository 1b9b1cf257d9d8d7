"""Rendering notices (German, English, wave-aware) and building safe message bytes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from rollout.config import NoticeSettings
from rollout.errors import DeliveryError
from rollout.notify.notices import Envelope, MailboxLine, NoticeContext, Renderer, build_message, message_id

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SWITCH = datetime(2026, 4, 14, 7, 30, tzinfo=UTC)  # 09:30 in Berlin (summer time)


def context(
    locale: str = "de",
    wave: int = 2,
    name: str = "Anna Schmidt",
    kind: str = "reminder",
    switch: datetime | None = SWITCH,
) -> NoticeContext:
    return NoticeContext(
        campaign_id=1,
        wave=wave,
        weeks=6,
        kind=kind,
        customer_ref="K1",
        customer_name=name,
        to_address="anna@example.org",
        locale=locale,
        mailboxes=(
            MailboxLine("anna@example.de", datetime(2026, 2, 27, 17, 5, tzinfo=UTC), "203.0.113.5", switch),
            MailboxLine("buero@example.de", None, None, None),
        ),
        deadline=switch or NOW + timedelta(days=42),
        now=NOW,
    )


@pytest.fixture
def renderer() -> Renderer:
    return Renderer(NoticeSettings(submission_host="smtp.example.net", help_url="https://example.net/hilfe"))


def test_german_notice_lists_mailboxes_dates_and_instructions(renderer: Renderer) -> None:
    """The German notice names each mailbox, its last legacy use, its switch-off date and the settings."""
    r = renderer.render(context("de-DE"))
    assert r.locale == "de" and r.subject == "Erinnerung 2 von 6: SMTP-Authentifizierung für 2 Postfächer einschalten"
    assert "anna@example.de" in r.text and "27.02.2026 18:05 von 203.0.113.5" in r.text
    assert "Abschaltung: 14.04.2026 09:30" in r.text and "Abschaltung: Termin folgt" in r.text
    assert (
        "smtp.example.net" in r.text
        and "Port: 587 mit STARTTLS" in r.text
        and "Thunderbird" in r.text
        and "Outlook" in r.text
    )
    assert (
        "https://example.net/hilfe" in r.text
        and "Ihnen bleiben noch 42 Tage" in r.text
        and "4 weitere folgen" in r.text
    )
    assert "<td>anna@example.de</td>" in r.html and "14.04.2026 09:30" in r.html


def test_english_notice_and_the_last_one_says_so(renderer: Renderer) -> None:
    """English uses ISO dates; the sixth reminder says it is the last."""
    r = renderer.render(context("en", wave=6))
    assert r.subject.startswith("Last reminder:")
    assert "this is our last reminder (6 of 6)" in r.text and "switched off: 2026-04-14 09:30" in r.text
    assert "last sent without login: 2026-02-27 18:05 from 203.0.113.5" in r.text
    assert "User name: the mailbox's full e-mail address" in r.text


def test_unknown_locale_falls_back_to_the_default(renderer: Renderer) -> None:
    """A customer locale without templates gets the configured default language."""
    assert renderer.render(context("fr")).locale == "en"


def test_html_is_autoescaped_and_text_is_not(renderer: Renderer) -> None:
    """Markup in a customer name is escaped in HTML and kept as written in plain text."""
    r = renderer.render(context("en", name="<b>Bad & Co</b>"))
    assert "&lt;b&gt;Bad &amp; Co&lt;/b&gt;" in r.html and "<b>Bad" not in r.html
    assert "Dear <b>Bad & Co</b>," in r.text


def test_operator_templates_win_and_undefined_variables_fail(tmp_path: Path) -> None:
    """An operator directory overrides shipped templates; an undefined variable names template and customer."""
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "subject.txt.j2").write_text("Custom {{ wave }}")
    renderer = Renderer(NoticeSettings(template_dir=str(tmp_path)))
    assert renderer.render(context("en")).subject == "Custom 2"
    (tmp_path / "en" / "subject.txt.j2").write_text("Custom {{ wav }}")
    with pytest.raises(DeliveryError, match=r"en/subject.txt.j2 failed for customer K1: 'wav' is undefined"):
        Renderer(NoticeSettings(template_dir=str(tmp_path))).render(context("en"))


def test_missing_template_dir_is_a_clear_error(tmp_path: Path) -> None:
    """A template_dir that does not exist is reported, not ignored."""
    with pytest.raises(DeliveryError, match="does not exist"):
        Renderer(NoticeSettings(template_dir=str(tmp_path / "nope")))


def test_message_parses_back_with_headers_and_both_parts(renderer: Renderer) -> None:
    """The hand-built bytes parse with the email package: headers, text and HTML parts, UTF-8."""
    envelope = Envelope.from_settings(
        NoticeSettings(from_address="Mail Support <support@example.net>", reply_to="help@example.net")
    )
    msg_id = message_id(1, 2, 7, envelope.domain)
    raw = build_message(envelope, "Jürgen Müller", "anna@example.org", msg_id, NOW, renderer.render(context("de")))
    m = message_from_bytes(raw, policy=policy.default)
    assert m["Message-ID"] == "<rollout.c1.w2.k7@example.net>" == message_id(1, 2, 7, "example.net")
    assert m["To"].addresses[0].display_name == "Jürgen Müller" and m["Subject"].startswith("Erinnerung 2 von 6")
    assert (
        m["Auto-Submitted"] == "auto-generated"
        and m["X-Auto-Response-Suppress"] == "All"
        and m["Reply-To"] == "help@example.net"
    )
    assert "Postfächer" in m.get_body(("plain",)).get_content() and "<table" in m.get_body(("html",)).get_content()
    assert raw.isascii()


def test_cr_lf_in_a_name_cannot_inject_headers(renderer: Renderer) -> None:
    """CR/LF and other control characters in a customer name are neutralised, never passed through."""
    envelope = Envelope.from_settings(NoticeSettings())
    raw = build_message(
        envelope,
        "Evil\r\nBcc: victim@example.com\x00",
        "anna@example.org",
        "<x@example.net>",
        NOW,
        renderer.render(context("en")),
    )
    m = message_from_bytes(raw, policy=policy.default)
    assert m["Bcc"] is None and "victim@example.com" in m["To"].addresses[0].display_name
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert not any(line.startswith(b"Bcc") for line in head.split(b"\r\n"))


@pytest.mark.parametrize(
    "address", ["anna@example.org\r\nBcc: x@example.com", "a\x07@example.org", "<a@example.org>", "no-at-sign"]
)
def test_addresses_with_control_characters_are_rejected(renderer: Renderer, address: str) -> None:
    """A recipient address that is not a plain address is refused with a clear error."""
    with pytest.raises(DeliveryError, match="not a plain e-mail address"):
        build_message(
            Envelope.from_settings(NoticeSettings()),
            "A",
            address,
            "<x@example.net>",
            NOW,
            renderer.render(context("en")),
        )


def test_thank_you_note_renders_in_both_languages(renderer: Renderer) -> None:
    """The thank-you note exists in German and English."""
    assert renderer.render(context("de", kind="thanks")).subject.startswith("Danke")
    assert "no more reminders" in renderer.render(context("en", kind="thanks")).text
