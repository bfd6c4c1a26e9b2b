"""Rehearse the paper profile on this machine: tiny random-weight stand-ins of Stable Diffusion,
CLIP, OpenFlamingo-3B and BLIP-2 and tiny BG-20k/COCO/LVIS/VOC/RefCOCO sets, all in their real
on-disk formats, then ``dvc exp run -S profile=<vlm>`` with the committed profile and the paths
docs/profiles.md tells a user to set (only paths and sizes changed), per VLM at the encoder's
resolution and at Tab. 3's higher one, in a copy of this checkout. Nothing is downloaded; any network
attempt fails the rehearsal. Takes a few minutes on a CPU.

    python scripts/rehearse_paper.py                       # both VLMs, in a temporary folder
    python scripts/rehearse_paper.py --vlm blip2 --workdir /tmp/rehearsal --keep
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, help="an empty (or new) folder for stand-ins, data and the repo copy")
    ap.add_argument("--keep", action="store_true", help="keep the work folder afterwards (kept anyway on failure)")
    ap.add_argument("--vlm", action="append", choices=["openflamingo", "blip2"],
                    help="the VLM(s) to rehearse (default: both)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from pin.errors import PinError
    from rehearsal.run import rehearse

    work = args.workdir or Path(tempfile.mkdtemp(prefix="pin-rehearsal-"))
    work.mkdir(parents=True, exist_ok=True)
    if any(work.iterdir()):
        print(f"--workdir {work} is not empty", file=sys.stderr)
        return 2
    start, ok = time.perf_counter(), False
    try:
        reports = rehearse(work, ROOT, tuple(args.vlm or ("openflamingo", "blip2")))
        problems = [p for r in reports for p in r.problems]
        for p in problems:
            print(f"[rehearsal] FAILED: {p}", file=sys.stderr)
        ok = not problems
    except PinError as err:
        print(f"[rehearsal] FAILED: {err}", file=sys.stderr)
    print(f"[rehearsal] {'passed' if ok else 'failed'} in {time.perf_counter() - start:.0f}s"
          + (f"; files kept in {work}" if args.keep or not ok else ""))
    if ok and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
