"""Write .dvc/plots/offline.html: the `dvc plots show` page with vega, vega-lite and vega-embed
inlined, so the charts draw without internet (`.dvc/config` names it: plots.html_template).

    python scripts/build_plots_template.py            # npm pack of pinned versions, sha512-checked
    python scripts/build_plots_template.py --check    # exit 1 unless it is built and current
    python scripts/build_plots_template.py --allow-cdn  # no npm: a page that loads the CDN instead

scripts/setup.sh runs it; see pin/viz/plots_template.py for why the page is built, not committed.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pin.viz.plots_template import CONFIG_VALUE, main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["--out", str(ROOT / ".dvc" / CONFIG_VALUE), *sys.argv[1:]]))
