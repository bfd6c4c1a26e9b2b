"""The rehearsal itself: the project's files copied into a fresh git repository, ``dvc exp run
-S profile=<vlm>`` with the committed profile and what the docs tell a user to set - only the
paths (pointed at the stand-ins) and the sizes changed - per VLM at the encoder's resolution and
at Tab. 3's higher one, then checks of what each run left.

What a user sets is read from the documentation (:mod:`rehearsal.flags`), so a flag that the
docs get wrong fails here. Every stage process (and DVC) runs with a ``sitecustomize``
that refuses and records any network connection, with empty HF/torch caches and the hub offline.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pin.errors import PinError
from rehearsal.flags import DATASETS, TABLE3, documented_flags, rehearsal_flags
from rehearsal.standins import StandIns

STAGES = ("generate", "filter", "compose", "pretrain_vlm", "train", "figures")
EXCLUDE_TOP = {"data", "models", "metrics", "dvclive", ".dvc/cache", ".dvc/tmp"}
EXCLUDE_FILES = {"dvc.lock"}

GUARD = '''"""Rehearsal guard: refuse and record every network connection of this process."""
import os
import socket

_LOG = os.environ["PIN_REHEARSAL_NET_LOG"]
_LOCAL = {None, "", "localhost", "127.0.0.1", "::1"}


def _record(what):
    import sys
    with open(_LOG, "a", encoding="utf-8") as f:
        f.write(f"{os.getpid()} {' '.join(sys.argv[:2])}: {what}\\n")
    raise OSError(101, f"rehearsal: network access refused ({what})")


def _guarded(original):
    def connect(self, address):
        if self.family != socket.AF_UNIX:
            _record(f"connect {address!r}")
        return original(self, address)
    return connect


def _lookup(original):
    def getaddrinfo(host, *args, **kwargs):
        if host not in _LOCAL:
            _record(f"getaddrinfo {host!r}")
        return original(host, *args, **kwargs)
    return getaddrinfo


socket.socket.connect = _guarded(socket.socket.connect)
socket.socket.connect_ex = _guarded(socket.socket.connect_ex)
socket.getaddrinfo = _lookup(socket.getaddrinfo)
'''


# ------------------------------------------------------------------ the repository
def _git(cwd: Path, *args: str) -> str:
    out = subprocess.run(["git", "-c", "user.name=pin-rehearsal", "-c", "user.email=rehearsal@example.invalid",
                          "-c", "commit.gpgsign=false", *args], cwd=cwd, capture_output=True, text=True)
    if out.returncode:
        raise PinError(f"git {' '.join(args)} failed in {cwd}:\n{out.stdout}{out.stderr}")
    return out.stdout


def snapshot(root: Path, dest: Path) -> int:
    """Tracked files as on disk plus untracked, not ignored ones (no pipeline outputs) -> a new
    git repository with one commit. Returns the number of files."""
    listed = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    files = [rel for rel in sorted(set(filter(None, listed)))
             if rel not in EXCLUDE_FILES and not any(rel == d or rel.startswith(d + "/") for d in EXCLUDE_TOP)
             and (root / rel).is_file()]
    for rel in files:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, dest / rel)
    _git(dest, "init", "--quiet")
    _git(dest, "add", "-A")
    _git(dest, "commit", "--quiet", "-m", "snapshot for the paper-profile rehearsal")
    return len(files)


def stage_env(repo: Path, work: Path) -> dict[str, str]:
    """The environment of DVC and the stages: this venv, the snapshot's ``pin``, the guard, no
    hub, empty caches."""
    guard = work / "guard"
    guard.mkdir(exist_ok=True)
    (guard / "sitecustomize.py").write_text(GUARD)
    for d in ("hf_home", "torch_home", "xdg_cache", "dvc-site-cache"):
        (work / d).mkdir(exist_ok=True)
    env = dict(os.environ)
    for k in ("DVC_EXP_BASELINE_REV", "DVC_ROOT", "DVC_EXP_NAME"):
        env.pop(k, None)
    env.update(
        PYTHONPATH=f"{repo}{os.pathsep}{guard}",  # the snapshot's pin wins over the editable install
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PIN_REHEARSAL_NET_LOG=str(work / "network.log"),
        HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", DVC_NO_ANALYTICS="1",
        HF_HOME=str(work / "hf_home"), TORCH_HOME=str(work / "torch_home"), XDG_CACHE_HOME=str(work / "xdg_cache"),
        DVC_SITE_CACHE_DIR=str(work / "dvc-site-cache"), TQDM_DISABLE="1",
        OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"), MKL_NUM_THREADS=env.get("MKL_NUM_THREADS", "1"),
    )
    return env


def check_guard(env: dict[str, str]) -> None:
    """The guard is live in a process started with ``env``: a connection is refused and logged
    (then the log is emptied, so what remains after the runs is theirs)."""
    log = Path(env["PIN_REHEARSAL_NET_LOG"])
    probe = ("import socket\ntry:\n    socket.create_connection(('127.0.0.1', 9), timeout=1)\n"
             "except OSError as e:\n    print('refused' if 'rehearsal' in str(e) else e)\n")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True).stdout.strip()
    if out != "refused" or not log.is_file() or "127.0.0.1" not in log.read_text():
        raise PinError(f"the network guard is not active in the stage environment (probe said {out!r})")
    log.unlink()


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------ one run and its checks
@dataclass
class RunReport:
    vlm: str  # "blip2", or "blip2@364" for Tab. 3's setting
    seconds: float
    ran: list[str]
    skipped: list[str]
    parse_rates: dict[str, float | None]
    insert_params: int
    problems: list[str] = field(default_factory=list)
    output: str = ""


def stage_lines(out: str) -> tuple[list[str], list[str]]:
    ran = re.findall(r"Running stage '([^']+)'", out)
    skipped = re.findall(r"Stage '([^']+)' didn't change, skipping", out)
    return ran, skipped


def _digest(tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().float().numpy().tobytes()).hexdigest()


def check_outputs(repo: Path, vlm: str, report: RunReport, vlm_digests: set[str]) -> None:
    """Metric files with a parse rate; models/pin holds the trained insert and no VLM tensor
    (compared by value, whatever it was named)."""
    from safetensors import safe_open

    for ds in DATASETS:
        path = repo / "metrics" / "eval" / f"{ds}.json"
        if not path.is_file():
            report.problems.append(f"{vlm}: {path.relative_to(repo)} was not written")
            continue
        rows = json.loads(path.read_text())
        if "pin" not in rows or "parse_rate" not in rows["pin"]:
            report.problems.append(f"{vlm}: {path.name} has no pin parse_rate: {sorted(rows)}")
            continue
        report.parse_rates[ds] = rows["pin"]["parse_rate"]
    train = json.loads((repo / "metrics" / "train.json").read_text())
    with safe_open(str(repo / "models" / "pin" / "model.safetensors"), "pt") as f:
        names = list(f.keys())
        report.insert_params = sum(_numel(f.get_slice(n).get_shape()) for n in names)
        # PIN saves its trained MLP and the fixed table S it reads (``table``), nothing else
        fixed = _numel(f.get_slice("table").get_shape()) if "table" in names else 0
        leaked = sorted(n for n in names if _digest(f.get_tensor(n)) in vlm_digests)
    if report.insert_params - fixed != train["trainable_params"]:
        report.problems.append(f"{vlm}: models/pin holds {report.insert_params} values ({fixed} of the table S), "
                               f"train.json says {train['trainable_params']} trainable")
    if leaked:
        report.problems.append(f"{vlm}: models/pin holds VLM weights, e.g. {leaked[:3]}")


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def run_vlm(repo: Path, env: dict, vlm: str, flags: list[str], say=print) -> tuple[str, float]:
    """``dvc exp run`` with ``flags``; each stage's start and summary line is passed to ``say``."""
    name = "rehearsal-" + re.sub(r"[^\w-]", "-", vlm)
    cmd = [str(Path(sys.executable).parent / "dvc"), "exp", "run", "--name", name, *flags]
    start = time.perf_counter()
    lines = []
    with subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Running stage") or re.match(r"\[[\w@]+\] (done in|error)", line):
                say(f"[rehearsal]   {line.rstrip()}")
    seconds = time.perf_counter() - start
    out = "".join(lines)
    if proc.returncode:
        raise PinError(f"dvc exp run ({vlm}) exited {proc.returncode} after {seconds:.0f}s:\n{out[-6000:]}")
    return out, seconds


def vlm_params(vlm: str, models: StandIns):
    from pin.params import VLMParams

    if vlm == "openflamingo":
        return VLMParams(name=vlm, checkpoint=str(models.of_checkpoint.parent), lang_model=str(models.of_lang),
                         clip_model=str(models.clip_config), clip_pretrained=str(models.clip_weights), device="cpu")
    return VLMParams(name=vlm, blip2_model=str(models.blip2), device="cpu")


def frozen_fingerprint(p) -> tuple[dict[str, str], float]:
    """The frozen VLM loaded as the stages load it: a digest per weight tensor, and its answer
    loss on a fixed picture, prompt and answer (a function of every layer's output)."""
    import numpy as np
    import torch
    from PIL import Image

    from pin.vlm.registry import load_vlm

    vlm = load_vlm(p)
    module = getattr(vlm, "flamingo", None) or vlm.model
    digests = {k: _digest(v) for k, v in module.state_dict().items()}
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    with torch.no_grad():
        feats = vlm.patch_features(vlm.preprocess([image]))
        loss = float(vlm.answer_loss(feats, [vlm.prompt("cat")], [" [10,20,30,40]"]))
    return digests, loss


def rehearse(work: Path, root: Path, vlms: tuple[str, ...] = ("openflamingo", "blip2"),
             say=print) -> list[RunReport]:
    """Build everything under ``work``, run ``dvc exp run`` once per VLM, check the results."""
    from rehearsal import datasets, standins

    t0 = time.perf_counter()
    models = standins.write_all(work, openflamingo="openflamingo" in vlms)
    data = datasets.write_all(work)
    say(f"[rehearsal] stand-ins and data sets written under {work} ({time.perf_counter() - t0:.0f}s)")
    docs = documented_flags(root)
    repo = work / "repo"
    repo.mkdir()
    n = snapshot(root, repo)
    say(f"[rehearsal] {n} project files copied to {repo} and committed")
    env = stage_env(repo, work)
    check_guard(env)
    where = subprocess.run([sys.executable, "-c", "import pin; print(pin.__file__)"], cwd=repo / "stages",
                           env=env, capture_output=True, text=True).stdout.strip()
    if not Path(where).resolve().is_relative_to(repo.resolve()):
        raise PinError(f"the stages would import pin from {where}, not from the snapshot {repo}")
    hashes = {f: sha256(f) for f in models.files()}
    reports = []
    for vlm, table3 in ((v, t) for v in vlms for t in (False, True)):
        p = vlm_params(vlm, models)
        before, loss_before = frozen_fingerprint(p)
        label = f"{vlm}@{TABLE3[vlm]['vlm.image_size']}" if table3 else vlm
        say(f"[rehearsal] {label}: dvc exp run -S profile={vlm} with the documented paths ...")
        out, seconds = run_vlm(repo, env, label, rehearsal_flags(docs, vlm, models, data, root, table3), say)
        ran, skipped = stage_lines(out)
        report = RunReport(label, seconds, ran, skipped, {}, 0, output=out)
        expected = [*STAGES, *(f"evaluate@{d}" for d in DATASETS)]
        report.problems += [f"{label}: stage {s} neither ran nor was up to date" for s in expected
                            if s not in ran and s not in skipped]
        if reports:  # a later run: only the stages before compose may be reused
            report.problems += [f"{label}: stage {s} was reused" for s in skipped if s not in ("generate", "filter")]
        elif skipped:
            report.problems.append(f"{label}: first run reused stages {skipped}")
        check_outputs(repo, label, report, set(before.values()))
        after, loss_after = frozen_fingerprint(p)
        changed = [k for k in before if after.get(k) != before[k]]
        if changed or before.keys() != after.keys() or loss_after != loss_before:
            report.problems.append(f"{label}: the frozen VLM reloads differently ({len(changed)} tensors changed, "
                                   f"loss {loss_before} -> {loss_after})")
        say(f"[rehearsal] {label}: {seconds:.0f}s; ran {', '.join(ran)}"
            + (f"; up to date: {', '.join(skipped)}" if skipped else "")
            + "; parse rates " + ", ".join(f"{d} {r}" for d, r in report.parse_rates.items()))
        reports.append(report)
    moved = [str(f) for f, h in hashes.items() if sha256(f) != h]
    if models.of_lang is not None:
        from rehearsal.mosaic_standin import SENTINEL

        if (models.of_lang / SENTINEL).exists():  # the mosaic_gpt remote-code stubs were imported
            reports[-1].problems.append(f"remote code ran: {models.of_lang / SENTINEL} exists")
    log = work / "network.log"
    net = log.read_text().splitlines() if log.is_file() else []
    last = reports[-1]
    last.problems += [f"weight file changed: {f}" for f in moved]
    last.problems += [f"network access attempted: {line}" for line in net]
    say(f"[rehearsal] {len(hashes)} stand-in files unchanged: {not moved}; network attempts: {len(net)}")
    return reports
