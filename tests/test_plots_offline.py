"""`dvc plots show` renders offline: the project's HTML template (`.dvc/config` plots.html_template)
has vega, vega-lite and vega-embed inlined, and headless Chromium - with every host name made
unresolvable, so nothing can come from the internet - draws the charts of a tiny metrics folder.
As a control, DVC's default page (scripts from a CDN) draws nothing under the same conditions.

Needs Debian's `chromium` and the built template (`scripts/setup.sh` builds it with npm;
`.ci/run` also installs chromium). Without them the browser tests skip and say why; with
PIN_REQUIRE_BROWSER_TEST=1 (set by .ci/run) they fail instead, so CI cannot pass by skipping.
"""
from __future__ import annotations

import configparser
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("build_plots_template", ROOT / "scripts" / "build_plots_template.py")
pt = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = pt  # dataclasses look their module up by name
_spec.loader.exec_module(pt)
DVC = Path(sys.executable).parent / "dvc"
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
REQUIRED = os.environ.get("PIN_REQUIRE_BROWSER_TEST") == "1"
LINE_COLOURS = {(0x94, 0x5D, 0xD6), (0x13, 0xAD, 0xC7)}  # DVC's first two series colours (dvc_render)


def _need(condition: bool, reason: str) -> None:
    if not condition:
        if REQUIRED:
            pytest.fail(f"{reason} (PIN_REQUIRE_BROWSER_TEST=1)")
        pytest.skip(reason)


# ----------------------------------------------------------------------------- no browser needed
def test_dvc_config_names_the_template():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / ".dvc" / "config")
    assert cfg["plots"]["html_template"].strip() == pt.CONFIG_VALUE
    assert pt.TEMPLATE == ROOT / ".dvc" / pt.CONFIG_VALUE
    ignored = subprocess.run(["git", "check-ignore", "-q", str(pt.TEMPLATE)], cwd=ROOT).returncode
    assert ignored in (0, 128)  # built, not committed (128: not a git checkout)


def test_render_inlines_scripts_and_leaves_no_cdn_placeholder():
    sources = {s.name: f"window.fake_{s.name.replace('-', '_')} = 1;" for s in pt.SCRIPTS}
    page = pt.render(sources, {"vega": "Copyright -- X -->"})
    assert "{plot_divs}" in page and "{refresh_tag}" in page
    assert "{scripts}" not in page  # DVC would put the CDN tags there
    assert "<script src=" not in page and "cdn.jsdelivr" not in page
    assert page.index("fake_vega =") < page.index("fake_vega_lite") < page.index("fake_vega_embed")
    assert "-->" not in page.split("licences:")[1].rsplit("-->", 1)[0]  # the licence text cannot end the comment
    bad = dict(sources, vega="a = '</script>';")
    with pytest.raises(pt.TemplateError, match="cannot be inlined"):
        pt.render(bad, {})
    cdn = pt.render_cdn()
    assert "{plot_divs}" in cdn and "cdn.jsdelivr.net/npm/vega@5.33.1" in cdn


def test_build_without_npm(tmp_path, monkeypatch):
    monkeypatch.setattr(pt.shutil, "which", lambda name: None)
    with pytest.raises(pt.TemplateError, match="npm is not installed"):
        pt.build(tmp_path / "t.html")
    said = pt.build(tmp_path / "t.html", allow_cdn=True)
    assert "warning" in said and not pt.is_offline(tmp_path / "t.html")
    assert "pin-banner" in (tmp_path / "t.html").read_text()
    assert pt.main(["--check", "--out", str(tmp_path / "t.html")]) == 1


# ----------------------------------------------------------------------------- in the browser
def _plots_repo(tmp_path: Path, template: Path | None) -> Path:
    """A tiny DVC project: two dvclive-style TSV series and a PNG, with `template` configured."""
    repo = tmp_path / "proj"
    (repo / "metrics" / "train").mkdir(parents=True)
    for name, f in (("loss", lambda s: 2.0 / (1 + s / 50)), ("acc", lambda s: 1 - 1 / (1 + s / 30))):
        rows = "".join(f"{s}\t{f(s):.4f}\n" for s in range(0, 200, 10))
        (repo / "metrics" / "train" / f"{name}.tsv").write_text(f"step\t{name}\n{rows}")
    Image.new("RGB", (60, 40), (200, 30, 30)).save(repo / "metrics" / "picture.png")
    (repo / "dvc.yaml").write_text(
        "plots:\n"
        "  - metrics/train:\n"
        "      x: step\n"
        "  - metrics/picture.png\n"
    )
    out = subprocess.run([str(DVC), "init", "--no-scm", "-q"], cwd=repo, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    if template is not None:
        (repo / ".dvc" / "plots").mkdir()
        shutil.copy(template, repo / ".dvc" / pt.CONFIG_VALUE)
        with open(repo / ".dvc" / "config", "a") as f:
            f.write(f"[plots]\n    html_template = {pt.CONFIG_VALUE}\n")
    return repo


def _show(repo: Path) -> Path:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    out = subprocess.run([str(DVC), "plots", "show", "-o", "rendered"], cwd=repo, capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return repo / "rendered" / "index.html"


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
           "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: no host name resolves
           "--virtual-time-budget=20000", "--hide-scrollbars", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


@pytest.fixture()
def browser():
    _need(CHROMIUM is not None, "Chromium is not installed (Debian: apt-get install chromium; .ci/run does it)")
    _need(DVC.exists(), f"dvc is not installed next to {sys.executable}")


def test_dvc_plots_show_draws_the_charts_offline(browser, tmp_path):
    _need(pt.is_offline(pt.TEMPLATE),
          f"{pt.TEMPLATE} is not built: run `python scripts/build_plots_template.py` (needs npm; setup.sh runs it)")
    page = _show(_plots_repo(tmp_path, pt.TEMPLATE))
    html = page.read_text()
    assert "<script src=" not in html and "cdn.jsdelivr" not in html
    dom = _chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    charts = re.findall(r'<canvas[^>]*class="marks"|<svg[^>]*class="marks"', dom.stdout)
    assert len(charts) == 2, f"expected 2 drawn charts, found {len(charts)}"
    assert 'src="static/' in dom.stdout  # the PNG plot is there too

    shot = tmp_path / "shot.png"
    res = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,900", page.as_uri())
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    pixels = Image.open(shot).convert("RGB")
    colours = {c for _, c in pixels.getcolors(maxcolors=1 << 20)}
    # the series' lines are drawn in DVC's palette (anti-aliasing leaves the exact colour inside)
    assert colours & LINE_COLOURS, "no line in the series colours: the charts did not draw"


def test_the_default_cdn_page_stays_blank_offline(browser, tmp_path):
    """The control: DVC's own page, scripts from the CDN, draws no chart without internet."""
    page = _show(_plots_repo(tmp_path, None))
    assert "cdn.jsdelivr.net" in page.read_text()
    dom = _chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert not re.search(r'class="marks"', dom.stdout)
