"""Write .dvc/plots/offline.html: an HTML template for ``dvc plots show`` that renders without
internet (`.dvc/config` names it: plots.html_template).

    python scripts/build_plots_template.py            # npm pack of pinned versions, sha512-checked
    python scripts/build_plots_template.py --check    # exit 1 unless it is built and current
    python scripts/build_plots_template.py --allow-cdn  # no npm: a page that loads the CDN instead

DVC's default page loads vega, vega-lite and vega-embed from a CDN (``dvc_render.vega``) and is
blank offline. DVC lets a repository name its own page (``plots.html_template`` in
``.dvc/config``, relative to ``.dvc/``); this script writes one with the three scripts inlined
and no ``{scripts}`` placeholder, so DVC never adds the CDN tags.

The scripts come from the npm registry through npm itself (``npm pack`` of pinned versions, the
tarballs checked against pinned sha512 digests), at setup time: ``scripts/setup.sh`` runs
``python scripts/build_plots_template.py``. The page (~0.85 MB, almost all of it the three
minified scripts) is not committed: pinned versions plus digests reproduce it byte for byte, and
git keeps no copy of third-party minified code. Versions: the newest releases of the major
versions DVC 3.67 itself loads (vega 5, vega-lite 5, vega-embed 6). Licences (BSD-3-Clause) are
copied into the page and listed in NOTICE.

Without npm, ``--allow-cdn`` writes a page that loads the same pinned versions from the CDN (and
says so in a banner), so ``dvc plots show`` still works where there is internet.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pin.io import atomic_write_text  # noqa: E402

CONFIG_VALUE = "plots/offline.html"  # what .dvc/config says (relative to .dvc/)
TEMPLATE = ROOT / ".dvc" / CONFIG_VALUE
MARKER = "pin-plots-template"


@dataclass(frozen=True)
class Script:
    name: str
    version: str
    file: str  # inside the npm tarball
    integrity: str  # the registry's sha512 of the tarball

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"


# Load order matters: vega-embed's UMD build reads the globals vega and vegaLite.
SCRIPTS = (
    Script("vega", "5.33.1", "package/build/vega.min.js",
           "sha512-1fArfVDUqVbb5z8n+/nVQb+VNBzx8svY6CrsyTK4Ujm4yrd9I1auoKxBAPXLCavY1LcrbHUskQbGUP8gXOzyQw=="),
    Script("vega-lite", "5.23.0", "package/build/vega-lite.min.js",
           "sha512-l4J6+AWE3DIjvovEoHl2LdtCUkfm4zs8Xxx7INwZEAv+XVb6kR6vIN1gt3t2gN2gs/y4DYTs/RPoTeYAuEg6mA=="),
    Script("vega-embed", "6.29.0", "package/build/vega-embed.min.js",
           "sha512-PmlshTLtLFLgWtF/b23T1OwX53AugJ9RZ3qPE2c01VFAbgt3/GSNI/etzA/GzdrkceXFma+FDHNXUppKuM0U6Q=="),
)
PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")  # dvc_render.html fills these
STYLE = """    <style>
        body { font-family: sans-serif; margin: 16px; }
        table { border-spacing: 15px; }
        .pin-banner { background: #fff3c4; border: 1px solid #d9b600; padding: 6px 10px; }
    </style>"""


class TemplateError(RuntimeError):
    pass


def stamp() -> str:
    return f"<!-- {MARKER} " + " ".join(s.spec for s in SCRIPTS) + " -->"


def render(sources: dict[str, str], licences: dict[str, str]) -> str:
    """The page with each script's source inlined (``sources``: name -> JS)."""
    blocks = []
    for s in SCRIPTS:
        js = sources[s.name]
        for bad in ("</script", *PLACEHOLDERS):
            if bad in js:
                raise TemplateError(f"{s.spec}: its source contains {bad!r} and cannot be inlined as is")
        blocks.append(f"    <!-- {s.spec} ({s.file[len('package/'):]}), inlined -->\n"
                      f"    <script type=\"text/javascript\">\n{js}\n    </script>")
    notice = "\n".join(f"{s.spec} - {licences.get(s.name, 'BSD-3-Clause').strip()}\n" for s in SCRIPTS)
    while "--" in notice:  # nothing in an HTML comment may close it
        notice = notice.replace("--", "- -")
    return "\n".join([
        "<!DOCTYPE html>",
        stamp(),
        "<html>",
        "<head>",
        "    {refresh_tag}",
        '    <meta charset="utf-8">',
        "    <title>DVC Plot</title>",
        *blocks,
        STYLE,
        "</head>",
        "<body>",
        "    {plot_divs}",
        "<!--",
        "Scripts inlined above (written by scripts/build_plots_template.py), their licences:",
        notice,
        "-->",
        "</body>",
        "</html>",
        "",
    ])


def render_cdn() -> str:
    """The fallback page: the same pinned scripts from the CDN DVC itself uses, and a banner."""
    tags = "\n".join(f'    <script src="https://cdn.jsdelivr.net/npm/{s.spec}"></script>' for s in SCRIPTS)
    return "\n".join([
        "<!DOCTYPE html>", stamp().replace(MARKER, MARKER + " cdn"), "<html>", "<head>", "    {refresh_tag}",
        '    <meta charset="utf-8">', "    <title>DVC Plot</title>", tags, STYLE, "</head>", "<body>",
        '    <p class="pin-banner">This page loads its chart scripts from the internet: run '
        "<code>python scripts/build_plots_template.py</code> where npm works to draw the charts offline.</p>",
        "    {plot_divs}", "</body>", "</html>", "",
    ])


def is_offline(path: str | Path = TEMPLATE) -> bool:
    """Whether ``path`` is this module's template, current versions, with the scripts inlined."""
    try:
        text = Path(path).read_text(encoding="utf8")
    except OSError:
        return False
    return stamp() in text and "<script src=" not in text and "{plot_divs}" in text


def _sri(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def fetch(workdir: Path, npm: str | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """``npm pack`` each pinned script into ``workdir``, check its digest, read the JS and licence."""
    npm = npm or shutil.which("npm")
    if not npm:
        raise TemplateError("npm is not installed (Debian: apt-get install npm; or use Node.js's own npm)")
    specs = [s.spec for s in SCRIPTS]
    proc = subprocess.run([npm, "pack", *specs, "--pack-destination", str(workdir), "--silent"],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise TemplateError(f"npm pack {' '.join(specs)} failed: {(proc.stderr or proc.stdout).strip()[-400:]}")
    sources, licences = {}, {}
    for s in SCRIPTS:
        tgz = workdir / f"{s.name}-{s.version}.tgz"
        data = tgz.read_bytes()
        if _sri(data) != s.integrity:
            raise TemplateError(f"{tgz.name}: sha512 {_sri(data)} is not the pinned {s.integrity}")
        with tarfile.open(tgz, "r:gz") as tar:
            sources[s.name] = tar.extractfile(s.file).read().decode("utf8")
            try:
                licences[s.name] = tar.extractfile("package/LICENSE").read().decode("utf8")
            except KeyError:
                licences[s.name] = "BSD-3-Clause"
    return sources, licences


def build(dest: str | Path = TEMPLATE, force: bool = False, allow_cdn: bool = False) -> str:
    """Write the offline template to ``dest`` (skipped when already current). Returns what it did."""
    dest = Path(dest)
    if not force and is_offline(dest):
        return f"{dest}: up to date ({', '.join(s.spec for s in SCRIPTS)} inlined)"
    try:
        with tempfile.TemporaryDirectory(prefix="pin-plots-") as tmp:
            page = render(*fetch(Path(tmp)))
    except (TemplateError, OSError, subprocess.SubprocessError) as err:
        if not allow_cdn:
            raise TemplateError(str(err)) from None
        atomic_write_text(dest, render_cdn())
        dest.chmod(0o644)
        return (f"warning: {err}\n{dest}: wrote a page that loads the charts' scripts from the internet; "
                "rerun `python scripts/build_plots_template.py` where npm works to draw them offline")
    atomic_write_text(dest, page)
    dest.chmod(0o644)
    return f"{dest}: {os.path.getsize(dest) / 1e6:.2f} MB, {', '.join(s.spec for s in SCRIPTS)} inlined"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=TEMPLATE, help=f"where to write it (default {TEMPLATE})")
    ap.add_argument("--force", action="store_true", help="rebuild even when up to date")
    ap.add_argument("--allow-cdn", action="store_true", help="without npm, write a page that loads the CDN")
    ap.add_argument("--check", action="store_true", help="only say whether the template is built (exit 1 if not)")
    args = ap.parse_args(argv)
    if args.check:
        ok = is_offline(args.out)
        print(f"{args.out}: {'offline template, ' + ', '.join(s.spec for s in SCRIPTS) if ok else 'missing or not offline'}")
        return 0 if ok else 1
    try:
        print(build(args.out, force=args.force, allow_cdn=args.allow_cdn))
    except TemplateError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
