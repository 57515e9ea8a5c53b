"""Time loading a 50,000-row rate deck through the service (parse, validate,
replace in the database, rebuild the in-memory index) and one lookup after it.

    python bench/deck_load.py --database-url sqlite:///tmp/x.db [--rows 50000]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rate_lookup import generate_deck_csv  # noqa: E402

from commcredits.services import catalog  # noqa: E402
from commcredits.store.db import make_engine  # noqa: E402
from commcredits.store.migrate import upgrade  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--rows", type=int, default=50_000)
    args = parser.parse_args()
    from commcredits.config import sqlalchemy_url

    engine = make_engine(sqlalchemy_url(args.database_url))
    upgrade(engine)
    text = generate_deck_csv(args.rows, random.Random(7))
    started = time.perf_counter()
    loaded = catalog.put_rates(engine, text)
    stored = time.perf_counter()
    cache = catalog.Catalog(engine)
    index, _ = cache.current()
    built = time.perf_counter()
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(
        f"deck of {loaded:,} rows: parsed and stored in {stored - started:.2f} s, "
        f"index loaded from the database in {built - stored:.2f} s"
    )
    print(f"rows in the index: {len(index):,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
