"""Build the deployable source of each function (run before `terraform apply`).

    python scripts/build_functions.py [--config config/example.toml] [--out build]

Writes build/<fn>/ (what Terraform zips) and build/<fn>.zip for ingest, webhook
and fanout. See truecount.packaging for what goes into each.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

if __name__ == "__main__":
    # Works with a plain interpreter too, not only from the project venv.
    sys.path.insert(0, str(ROOT / "shared"))
    from truecount.packaging import main

    sys.exit(main(root=ROOT))
