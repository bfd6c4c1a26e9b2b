"""The pull-request report (what .github/workflows/pr.yml posts with CML): sorted
`dvc metrics diff --md` and `dvc params diff --md`, the line plots of `dvc plots diff` as a PNG,
the image plots of both revisions, and the interactive plots page.

    python scripts/pr_report.py [REV=main] [OUT=report]    # then open OUT/report.md
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pin.viz.report import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
