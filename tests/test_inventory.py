"""`rollout inventory import` and `stats`: upsert, all or nothing, every bad row named."""

import json
from pathlib import Path

from sqlalchemy import select

from rollout.models import AuditEvent, Customer, Mailbox
from rollout.runtime import Runtime

from .conftest import Cli, write_csv

HEADER = "mailbox,customer_id,customer_email,customer_name,locale"


def dump(runtime: Runtime) -> list[tuple]:
    """Everything the inventory holds, for before/after comparisons."""
    with runtime.sessions() as session:
        customers = session.execute(
            select(Customer.external_id, Customer.email, Customer.name, Customer.locale).order_by(Customer.external_id)
        ).all()
        mailboxes = session.execute(
            select(
                Mailbox.address,
                Mailbox.address_key,
                Mailbox.login,
                Mailbox.bucket,
                Mailbox.sort_key,
                Customer.external_id,
            )
            .join(Customer)
            .order_by(Mailbox.address_key)
        ).all()
    return [tuple(r) for r in customers] + [tuple(r) for r in mailboxes]


def test_import_creates_customers_and_mailboxes(run: Cli, runtime: Runtime, tmp_path: Path) -> None:
    """A first import adds everything and reports the counts."""
    csv = write_csv(
        tmp_path / "a.csv",
        [
            "Anna@Example.DE,K1,k1@example.org,Anna GmbH,de",
            "info@bücher.de,K1,k1@example.org,Anna GmbH,de",
            "zed@example.net,K2,z@example.org,Zed,en",
        ],
    )
    out = json.loads(run("inventory", "import", str(csv), "--json").output)
    assert (out["customers_added"], out["mailboxes_added"], out["rows"]) == (2, 3, 3)
    rows = dump(runtime)
    assert ("Anna@example.de", "anna@example.de", None, "a", "anna", "K1") in rows
    assert ("info@xn--bcher-kva.de", "info@xn--bcher-kva.de", None, "i", "info", "K1") in rows


def test_second_import_updates_changes_and_counts_unchanged(run: Cli, runtime: Runtime, tmp_path: Path) -> None:
    """Re-importing with changed data updates; unchanged rows are counted as such."""
    first = write_csv(
        tmp_path / "a.csv", ["a@example.de,K1,k1@example.org,Anna,de", "b@example.de,K2,k2@example.org,Bert,de"]
    )
    run("inventory", "import", str(first))
    second = write_csv(
        tmp_path / "b.csv",
        ["A@example.de,K2,k2@example.org,Bert Neu,en,", "b@example.de,K2,k2@example.org,Bert Neu,en,b-login"],
        header=HEADER + ",login",
    )
    out = json.loads(run("inventory", "import", str(second), "--json").output)
    assert out["customers_updated"] == 1 and out["customers_unchanged"] == 0 and out["customers_added"] == 0
    assert out["mailboxes_updated"] == 2 and out["mailboxes_added"] == 0
    rows = dump(runtime)
    assert ("A@example.de", "a@example.de", None, "a", "a", "K2") in rows  # moved customer, case of local part kept
    assert ("b@example.de", "b@example.de", "b-login", "b", "b", "K2") in rows
    assert ("K2", "k2@example.org", "Bert Neu", "en") in rows
    again = json.loads(run("inventory", "import", str(second), "--json").output)
    assert (again["mailboxes_unchanged"], again["customers_unchanged"], again["mailboxes_updated"]) == (2, 1, 0)


def test_absent_mailboxes_stay_unless_prune(run: Cli, runtime: Runtime, tmp_path: Path) -> None:
    """Mailboxes missing from the file are reported and kept; --prune deletes them and empty customers."""
    run(
        "inventory",
        "import",
        str(
            write_csv(tmp_path / "a.csv", ["a@example.de,K1,k@example.org,A,de", "b@example.de,K2,k@example.org,B,de"])
        ),
    )
    smaller = write_csv(tmp_path / "b.csv", ["a@example.de,K1,k@example.org,A,de"])
    out = run("inventory", "import", str(smaller)).output
    assert "1 mailboxes in the database are not in the file" in out and "b@example.de" in out
    assert len([r for r in dump(runtime) if len(r) == 6]) == 2
    out = json.loads(run("inventory", "import", str(smaller), "--prune", "--json").output)
    assert (out["mailboxes_pruned"], out["customers_pruned"]) == (1, 1)
    assert [r[0] for r in dump(runtime) if len(r) == 6] == ["a@example.de"]


def test_dry_run_writes_nothing(run: Cli, runtime: Runtime, tmp_path: Path) -> None:
    """--dry-run reports what would change and leaves the database untouched."""
    csv = write_csv(tmp_path / "a.csv", ["a@example.de,K1,k@example.org,A,de"])
    out = run("inventory", "import", str(csv), "--dry-run").output
    assert "dry run, nothing written" in out
    assert dump(runtime) == []


def test_bom_extra_columns_and_column_order(run: Cli, runtime: Runtime, tmp_path: Path) -> None:
    """UTF-8 with BOM, columns in any order, and extra columns ignored."""
    path = tmp_path / "bom.csv"
    path.write_bytes(
        "\ufefflocale,Plan,mailbox,customer_name,customer_email,customer_id\r\nde,gold,jürgen@example.de,Jürgen,j@example.de,K9\r\n".encode()
    )
    run("inventory", "import", str(path))
    assert ("jürgen@example.de", "jürgen@example.de", None, "j", "jurgen", "K9") in dump(runtime)


def test_one_bad_row_in_ten_thousand_leaves_the_database_as_before(run: Cli, runtime: Runtime, tmp_path: Path) -> None:
    """A 10,000-row file with one bad row writes nothing and names that row's line and fault."""
    run("inventory", "import", str(write_csv(tmp_path / "seed.csv", ["keep@example.de,K0,k0@example.org,Keeper,de"])))
    before = dump(runtime)
    rows = [f"user{i}@example.de,K{i % 3000},c{i % 3000}@example.org,Customer {i % 3000},de" for i in range(10_000)]
    rows[6_001] = "user6001@exa mple.de,K1,c1@example.org,Customer 1,de"
    result = run("inventory", "import", str(write_csv(tmp_path / "big.csv", rows)), expect=1)
    assert "1 bad row; nothing was imported" in result.output
    assert "line 6003: mailbox:" in result.output and "not a valid domain" in result.output  # header is line 1
    assert dump(runtime) == before
    with runtime.sessions() as session:
        assert session.scalars(select(AuditEvent.action)).all() == ["inventory.import"]  # only the seed


def test_every_bad_row_is_reported_with_a_capped_list(run: Cli, runtime: Runtime, tmp_path: Path) -> None:
    """All bad rows count; the first 20 are listed and the total is given."""
    rows = [f"bad{i}-no-at,K1,k@example.org,A,de" for i in range(30)] + ["good@example.de,K1,k@example.org,A,de"]
    result = run("inventory", "import", str(write_csv(tmp_path / "a.csv", rows)), expect=1)
    assert "30 bad rows" in result.output
    assert "line 2: mailbox: 'bad0-no-at' has no @" in result.output
    assert "line 21:" in result.output and "line 22:" not in result.output
    assert "and 10 more (30 bad rows in all)" in result.output
    assert dump(runtime) == []


def test_cross_row_conflicts_are_reported(run: Cli, tmp_path: Path) -> None:
    """Duplicate mailboxes (any case), contradicting customer data and shared logins are errors."""
    rows = [
        "a@example.de,K1,k@example.org,A,de,",
        "A@EXAMPLE.DE,K1,k@example.org,A,de,",
        "b@example.de,K1,other@example.org,A,de,",
        "c@example.de,K2,k2@example.org,C,en,shared",
        "d@example.de,K2,k2@example.org,C,en,SHARED",
    ]
    out = run(
        "inventory", "import", str(write_csv(tmp_path / "a.csv", rows, header=HEADER + ",login")), expect=1
    ).output
    assert "line 3: mailbox a@example.de is already on line 2" in out
    assert "line 4: customer K1: e-mail, name or locale differ from line 2" in out
    assert "line 6: login shared is already used by the mailbox on line 5" in out


def test_malformed_csv_and_field_counts(run: Cli, tmp_path: Path) -> None:
    """Rows with the wrong number of fields, control characters and bad encodings are named."""
    path = tmp_path / "a.csv"
    path.write_bytes(
        (HEADER + "\na@example.de,K1,k@example.org,A,de,surplus\nb@example.de,K1\n").encode()
        + b"c@example.de,K1,k@example.org,\xff\xfe,de\n"
        + b'd@example.de,K2,k@example.org,"Evil\r\nBcc: x",de\n'
        + b'e@example.de,K3,k@example.org,"unterminated,de\n'
    )
    out = run("inventory", "import", str(path), expect=1).output
    assert "line 2: has 6 fields, the header has 5" in out
    assert "line 3: has 2 fields, the header has 5" in out
    assert "line 4: customer_name is not valid UTF-8" in out
    assert "customer_name contains a control character" in out
    assert "malformed CSV" in out


def test_header_problems_fail_early(run: Cli, tmp_path: Path) -> None:
    """A missing header or a missing required column is one clear error."""
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert "header row is required" in run("inventory", "import", str(empty), expect=1).output
    nohead = write_csv(tmp_path / "b.csv", ["a@example.de,K1"], header="mailbox,customer")
    out = run("inventory", "import", str(nohead), expect=1).output
    assert "the header lacks customer_id, customer_email, customer_name, locale" in out


def test_missing_file_is_a_usage_error(run: Cli, tmp_path: Path) -> None:
    """A file that does not exist is refused by the option parser (exit 2)."""
    result = run("inventory", "import", str(tmp_path / "nope.csv"), expect=2)
    assert "does not exist" in result.output


def test_import_writes_an_audit_event(run: Cli, runtime: Runtime, tmp_path: Path) -> None:
    """The import is recorded with actor, time and counts."""
    run(
        "--actor",
        "alice",
        "inventory",
        "import",
        str(write_csv(tmp_path / "a.csv", ["a@example.de,K1,k@example.org,A,de"])),
    )
    with runtime.sessions() as session:
        event = session.scalars(select(AuditEvent)).one()
    assert event.actor == "alice" and event.action == "inventory.import"
    assert event.details["mailboxes_added"] == 1 and event.details["file"].endswith("a.csv")
    assert event.at == runtime.clock.now()


def test_stats_shares_per_initial_bucket(run: Cli, tmp_path: Path) -> None:
    """Stats give the share per bucket: digits first, accents folded, others last."""
    rows = [
        f"{local}@example.de,K1,k@example.org,A,de"
        for local in ("anna", "Ärger", "bob", "1und1", "_x", "zoe", "Zack", "émile")
    ]
    run("inventory", "import", str(write_csv(tmp_path / "a.csv", rows)))
    data = json.loads(run("inventory", "stats", "--json").output)
    shares = {b["label"]: (b["mailboxes"], b["share"]) for b in data["buckets"] if b["mailboxes"]}
    assert shares == {
        "0-9": (1, 0.125),
        "a": (2, 0.25),
        "b": (1, 0.125),
        "e": (1, 0.125),
        "z": (2, 0.25),
        "other": (1, 0.125),
    }
    assert [b["label"] for b in data["buckets"]][:2] == ["0-9", "a"] and data["buckets"][-1]["label"] == "other"
    assert (data["customers"], data["mailboxes"], data["domains"]) == (1, 8, 1)
    text = run("inventory", "stats").output
    assert "1 customers, 8 mailboxes in 1 domains" in text and "25.00%" in text
