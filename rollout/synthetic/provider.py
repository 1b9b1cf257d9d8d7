"""A seeded, realistic provider inventory: customers, their domains and mailboxes.

Local parts follow what a German hosting provider really has: first.last,
initials, role addresses (info@, kontakt@), digits (``1und1``), umlauts and
other accents (``jürgen``, ``özlem``), now and then an underscore, and some
old Confixx-style POP logins (``web12p3``) that differ from the address.
The initial letters are therefore as unevenly spread as in real life, which is
what cohort balancing is about.

    >>> rows = list(iter_inventory(mailboxes=10, customers=4, seed=7))
    >>> len(rows), len({r.customer_id for r in rows})
    (10, 4)
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from dataclasses import astuple, dataclass, fields
from pathlib import Path

FIRST_NAMES = (
    "anna",
    "andreas",
    "alexander",
    "birgit",
    "bernd",
    "christian",
    "claudia",
    "daniel",
    "dieter",
    "elke",
    "frank",
    "gabriele",
    "günter",
    "hans",
    "heike",
    "ingrid",
    "jürgen",
    "jan",
    "julia",
    "katrin",
    "klaus",
    "lena",
    "lukas",
    "markus",
    "maria",
    "michael",
    "monika",
    "nicole",
    "norbert",
    "olaf",
    "özlem",
    "paul",
    "petra",
    "ralf",
    "renate",
    "sabine",
    "sandra",
    "stefan",
    "susanne",
    "thomas",
    "tobias",
    "ute",
    "uwe",
    "volker",
    "werner",
    "wolfgang",
    "yvonne",
    "zoe",
    "émile",
    "ömer",
    "çelik",
    "åsa",
    "łukasz",
    "sören",
)
LAST_NAMES = (
    "müller",
    "schmidt",
    "schneider",
    "fischer",
    "weber",
    "meyer",
    "wagner",
    "becker",
    "schulz",
    "hoffmann",
    "schäfer",
    "koch",
    "bauer",
    "richter",
    "klein",
    "wolf",
    "schröder",
    "neumann",
    "schwarz",
    "zimmermann",
    "braun",
    "krüger",
    "hofmann",
    "hartmann",
    "lange",
    "schmitt",
    "werner",
    "krause",
    "meier",
    "lehmann",
    "köhler",
    "herrmann",
    "könig",
    "walter",
    "mayer",
    "huber",
    "kaiser",
    "fuchs",
    "peters",
    "lang",
    "yilmaz",
    "öztürk",
    "nowak",
    "ivanov",
    "dubois",
    "rossi",
    "garcía",
    "jansen",
    "øster",
)
ROLES = ("info", "kontakt", "office", "mail", "buchhaltung", "rechnung", "service", "support", "vertrieb", "praxis")
TRADES = ("bau", "praxis", "kanzlei", "design", "autohaus", "bäckerei", "immobilien", "reisen", "technik", "garten")
TLDS = ("de", "de", "de", "com", "net", "org", "eu", "at", "ch")
SHARED_DOMAINS = ("example-mail.de", "post.example.net", "web.example.org")


@dataclass(frozen=True)
class InventoryRow:
    mailbox: str
    customer_id: str
    customer_email: str
    customer_name: str
    locale: str
    login: str


HEADER = tuple(f.name for f in fields(InventoryRow))


def iter_inventory(mailboxes: int, customers: int, seed: int = 1) -> Iterator[InventoryRow]:
    """Yield ``mailboxes`` rows spread over ``customers`` customers (at least one each)."""
    if customers < 1 or mailboxes < customers:
        raise ValueError("need at least one customer and at least one mailbox per customer")
    rng = random.Random(seed)
    for number, count in enumerate(_mailboxes_per_customer(rng, mailboxes, customers), start=1):
        yield from _customer_rows(rng, number, count)


def write_inventory_csv(path: Path, mailboxes: int, customers: int, seed: int = 1) -> int:
    """Write the inventory as the CSV `rollout inventory import` reads; returns the row count."""
    rows = 0
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADER)
        for row in iter_inventory(mailboxes, customers, seed):
            writer.writerow(astuple(row))
            rows += 1
    return rows


def _mailboxes_per_customer(rng: random.Random, mailboxes: int, customers: int) -> list[int]:
    """Most customers have one or two mailboxes, a few have dozens (a long tail)."""
    counts = [1] * customers
    extra = mailboxes - customers
    weights = [rng.paretovariate(1.6) for _ in range(customers)]
    total = sum(weights)
    assigned = 0
    for i, w in enumerate(weights):
        share = int(extra * w / total)
        counts[i] += share
        assigned += share
    for i in rng.sample(range(customers), extra - assigned) if extra - assigned <= customers else []:
        counts[i] += 1
    return counts


def _customer_rows(rng: random.Random, number: int, count: int) -> Iterator[InventoryRow]:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    business = rng.random() < 0.55
    if business:
        trade = rng.choice(TRADES)
        name = f"{last.capitalize()} {trade.capitalize()} GmbH"
        domain = f"{last}-{trade}{number}.{rng.choice(TLDS)}"
    else:
        name = f"{first.capitalize()} {last.capitalize()}"
        domain = f"{_ascii(last)}{number}.{rng.choice(TLDS)}" if rng.random() < 0.7 else rng.choice(SHARED_DOMAINS)
    locale = "de" if rng.random() < 0.7 else "en"
    contact = f"{_ascii(first)}.{_ascii(last)}{number}@{rng.choice(('gmx.example', 'web.example', 'mail.example'))}"
    customer_id = f"K{number:07d}"
    used: set[str] = set()
    for k in range(count):
        local = _local_part(rng, first, last, business, k)
        while local in used:
            local = f"{local}{rng.randrange(10)}"
        used.add(local)
        if domain in SHARED_DOMAINS:
            local = f"{local}.{number}"  # shared domains: a final ".<customer number>" keeps addresses unique
        login = f"web{number}p{k + 1}" if rng.random() < 0.05 else ""
        yield InventoryRow(f"{local}@{domain}", customer_id, contact, name, locale, login)


def _local_part(rng: random.Random, first: str, last: str, business: bool, k: int) -> str:
    if k == 0:
        return (
            rng.choice(ROLES)
            if business and rng.random() < 0.6
            else rng.choice((f"{first}.{last}", first, f"{first[0]}.{last}"))
        )
    roll = rng.random()
    if roll < 0.55:
        return f"{rng.choice(FIRST_NAMES)}.{rng.choice(LAST_NAMES)}"
    if roll < 0.75:
        return rng.choice(FIRST_NAMES)
    if roll < 0.85:
        return rng.choice(ROLES)
    if roll < 0.93:
        return f"{rng.choice(FIRST_NAMES)[0]}{rng.choice(LAST_NAMES)}"
    if roll < 0.97:
        return f"{rng.randrange(1, 99)}{rng.choice(('und1', 'team', 'fach', 'mail'))}"
    return f"_{rng.choice(ROLES)}"


def _ascii(text: str) -> str:
    table = str.maketrans(
        {"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "é": "e", "ç": "c", "å": "a", "ł": "l", "ø": "o", "í": "i"}
    )
    return text.translate(table)
