"""The seeded synthetic inventory used by the demo and the benchmarks."""

import json
from pathlib import Path

from rollout.synthetic.provider import iter_inventory, write_inventory_csv

from .conftest import Cli


def test_same_seed_same_inventory_and_exact_counts() -> None:
    """A seed reproduces the inventory; the requested numbers of mailboxes and customers are met."""
    first = list(iter_inventory(3_000, 1_200, seed=5))
    assert first == list(iter_inventory(3_000, 1_200, seed=5))
    assert first != list(iter_inventory(3_000, 1_200, seed=6))
    assert len(first) == 3_000 and len({r.customer_id for r in first}) == 1_200
    assert len({r.mailbox.lower() for r in first}) == 3_000


def test_generated_csv_imports_cleanly_with_uneven_initials(run: Cli, tmp_path: Path) -> None:
    """Every generated row passes import validation, and the initials are realistically uneven."""
    path = tmp_path / "inv.csv"
    assert write_inventory_csv(path, 2_000, 800, seed=1) == 2_000
    summary = json.loads(run("inventory", "import", str(path), "--json").output)
    assert (summary["mailboxes_added"], summary["customers_added"]) == (2_000, 800)
    shares = [b["share"] for b in json.loads(run("inventory", "stats", "--json").output)["buckets"]]
    assert max(shares) > 2.5 * (1 / 28)  # some letters (s, m) far above an even spread
    assert shares[-1] > 0 and shares[0] > 0  # accents/underscores after z, digits before a
