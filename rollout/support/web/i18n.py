"""German and English by the browser's Accept-Language; English text is the key."""

from __future__ import annotations

from collections.abc import Callable

LANGUAGES = ("en", "de")

GERMAN = {
    "Support desk": "Support-Desk",
    "Log in": "Anmelden",
    "Log out": "Abmelden",
    "Account": "Konto",
    "Password": "Passwort",
    "Wrong account or password.": "Konto oder Passwort falsch.",
    "Too many failed logins: try again in a few minutes.": (
        "Zu viele Fehlversuche: bitte in einigen Minuten erneut versuchen."
    ),
    "Please log in.": "Bitte anmelden.",
    "Search": "Suchen",
    "Address, login, customer id or contact address": "Adresse, Login, Kundennummer oder Kontaktadresse",
    "Overview": "Übersicht",
    "Phase": "Phase",
    "as of": "Stand",
    "customers": "Kunden",
    "mailboxes": "Postfächer",
    "still using SMTP-after-POP": "nutzen noch SMTP-after-POP",
    "Next": "Als Nächstes",
    "at": "um",
    "Paused": "Angehalten",
    "by": "von",
    "Notice waves": "Benachrichtigungswellen",
    "Wave": "Welle",
    "due": "fällig",
    "sent": "gesendet",
    "delivered": "zugestellt",
    "bounced": "unzustellbar",
    "failed": "fehlgeschlagen",
    "uncertain": "ungewiss",
    "pending": "ausstehend",
    "sending": "wird gesendet",
    "Cohorts": "Kohorten",
    "Gates before the next step": "Prüfungen vor dem nächsten Schritt",
    "gate": "Prüfung",
    "figure": "Wert",
    "threshold": "Schwelle",
    "off": "aus",
    "passes": "erfüllt",
    "holds the step": "hält den Schritt an",
    "Cohort": "Kohorte",
    "range": "Bereich",
    "share": "Anteil",
    "stage": "Stufe",
    "scheduled": "geplant",
    "switched off": "abgeschaltet",
    "still legacy": "noch Altverfahren",
    "refusals since switch-off": "Abweisungen seit Abschaltung",
    "Mailboxes with legacy use per week": "Postfächer mit Altverfahren je Woche",
    "week of": "Woche ab",
    "Exemptions ending within 7 days": "Ausnahmen, die in 7 Tagen enden",
    "Held back from the switch-off": "Von der Abschaltung zurückgehalten",
    "Customers whose latest notice bounced": "Kunden, deren letzte Benachrichtigung unzustellbar war",
    "delivery": "Zustellung",
    "address": "Adresse",
    "customer": "Kunde",
    "cohort": "Kohorte",
    "held at": "zurückgehalten am",
    "redated to": "verschoben in",
    "redated at": "neuer Termin",
    "delayed": "verzögert",
    "unknown": "unbekannt",
    "Ambiguous sightings open for review": "Mehrdeutige Funde zur Prüfung offen",
    "No plan yet.": "Noch kein Plan.",
    "Nothing found for": "Nichts gefunden für",
    "Several customers match": "Mehrere Kunden passen",
    "Customer": "Kunde",
    "contact": "Kontakt",
    "language": "Sprache",
    "found by": "gefunden über",
    "Mailbox": "Postfach",
    "login": "Login",
    "Legacy use": "Nutzung des Altverfahrens",
    "none seen": "keine gesehen",
    "last": "zuletzt",
    "from": "von",
    "submissions on": "Einlieferungen an",
    "days": "Tagen",
    "confidence": "Sicherheit",
    "client IPs": "Client-IPs",
    "senders": "Absender",
    "SMTP AUTH last used": "SMTP AUTH zuletzt genutzt",
    "switched": "umgestellt",
    "legacy use since": "seitdem Altverfahren",
    "not yet switched off": "noch nicht abgeschaltet",
    "no cohort (no plan applied)": "keine Kohorte (kein Plan)",
    "Exemption until": "Ausnahme bis",
    "Exemption ended, was until": "Ausnahme beendet, galt bis",
    "Refused by our map": "Von unserer Map abgewiesen",
    "times": "mal",
    "A client sending without AUTH now gets": "Ein Client ohne AUTH bekommt jetzt",
    "Stage warn: mail sent without AUTH is still accepted; Postfix logs a warning.": (
        "Stufe warn: Mail ohne AUTH wird noch angenommen; Postfix protokolliert eine Warnung."
    ),
    "Mail sent without AUTH is accepted.": "Mail ohne AUTH wird angenommen.",
    "Evidence": "Belege",
    "more mailboxes, not shown (the ones with legacy use come first)": (
        "weitere Postfächer, nicht gezeigt (die mit Altverfahren zuerst)"
    ),
    "Notices to the customer": "Benachrichtigungen an den Kunden",
    "none": "keine",
    "kind": "Art",
    "state": "Zustand",
    "Message-ID": "Message-ID",
    "mailboxes listed": "genannte Postfächer",
    "All mailboxes": "Alle Postfächer",
    "Still on the legacy path": "Noch auf dem Altverfahren",
    "Refused since the switch-off": "Seit der Abschaltung abgewiesen",
    "last legacy use": "letzte Nutzung Altverfahren",
    "refusals": "Abweisungen",
    "Next page": "Nächste Seite",
    "First page": "Erste Seite",
    "No mailboxes.": "Keine Postfächer.",
    "No such cohort.": "Keine solche Kohorte.",
    "No such customer.": "Kein solcher Kunde.",
    "Not found": "Nicht gefunden",
    "Read-only: nothing here changes the rollout.": "Nur lesend: hier ändert nichts den Rollout.",
    "Times are UTC.": "Zeiten in UTC.",
    "logged in as": "angemeldet als",
    "Scheduler": "Scheduler",
    "job": "Job",
    "started": "gestartet",
    "outcome": "Ergebnis",
    "note": "Hinweis",
    "until": "bis",
    "reason": "Grund",
}
CATALOGUES: dict[str, dict[str, str]] = {"en": {}, "de": GERMAN}


def choose_language(accept_language: str | None) -> str:
    """The first of the browser's languages (by q) that we speak; English otherwise."""
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        ranked.append((-quality, position, tag.strip().lower().split("-")[0]))
    for _, _, language in sorted(ranked):
        if language in LANGUAGES:
            return language
    return "en"


def translator(language: str) -> Callable[[str], str]:
    catalogue = CATALOGUES.get(language, {})
    return lambda text: catalogue.get(text, text)
