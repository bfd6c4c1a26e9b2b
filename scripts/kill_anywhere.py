#!/usr/bin/env python
"""Kill anywhere, rerun, same result: SIGKILL `dvc repro` inside the long stages, rerun, and check
that the outputs end byte-identical to an uninterrupted run.

    python scripts/kill_anywhere.py                      # 3 kills in each of generate, compose,
                                                         # pretrain_vlm and train (12 in all)
    python scripts/kill_anywhere.py --kills 1 --target compose --stages generate,compose

What it does, in a scratch folder (``--workdir``, a temporary one by default):

1. snapshots the project (tracked files plus untracked, not ignored ones, as they are on disk;
   no pipeline outputs) into two fresh git repositories with the shrunken params of ``PROFILE``;
2. ``ref``: one uninterrupted ``dvc repro <target>``; records how long each stage ran;
3. ``kill``: for each stage of ``--stages`` in pipeline order, ``--kills`` times: starts
   ``dvc repro <stage>``, waits for DVC's "Running stage '<stage>'" line, sleeps a random delay
   (seeded, a fraction of the stage's reference duration) and SIGKILLs the whole process group
   (dvc, the stage's python, its workers). A stage that finishes before its kill is reset
   (outputs deleted; the next try forces that one stage, ``dvc repro --force --single-item``, and kills sooner) so that it
   starts again. Then one uninterrupted ``dvc repro <target>`` finishes the pipeline;
4. compares the sha256 of every output file (data/, models/, metrics/) and of dvc.lock's output
   hashes between ``ref`` and ``kill``, byte for byte (wall-clock timings live only in the
   uncommitted metrics/timing.json, which is not compared), and checks that no temporary file and no checkpoint is left and ``dvc status`` is clean.

Every python process (dvc and the stages) runs with a guard that refuses IPv4/IPv6 connections
and DNS lookups and logs each attempt: the report says how many there were (0 = the offline
default opens no network connection, DVC included).

Exit status 0 when every hash matches and the checks pass, 1 otherwise.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DVC = BIN / "dvc"
PIPELINE = ("generate", "filter", "compose", "pretrain_vlm", "train", "evaluate@synthetic")
LONG_STAGES = ("generate", "compose", "pretrain_vlm", "train")
EXCLUDE_TOP = {"data", "models", "metrics", "dvclive", ".dvc/cache", ".dvc/tmp"}
EXCLUDE_FILES = {"dvc.lock"}
OUTPUT_DIRS = ("data", "models", "metrics")

# Shrunken params: every stage does real work (a few seconds each on 2 CPU cores), small
# shards and frequent checkpoints so that a resume has something to reuse.
PROFILE = {
    "generate": {"max_categories": 8, "per_category": 40, "image_size": 96},
    "filter": {"min_per_class": 2},
    "compose": {"image_size": 112, "n_train": 256, "n_val": 16, "n_heldout": 32, "n_pretrain": 256,
                "shard_size": 16, "workers": 1},
    "pretrain": {"source": "train", "vision_steps": 30, "lm_steps": 30, "batch_size": 8, "vision_width": 32,
                 "vision_layers": 1, "lm_width": 32, "lm_layers": 2},
    "train": {"steps": 200, "batch_size": 8, "checkpoint_every": 10, "log_every": 2},
    "eval": {"max_queries": 16, "batch_size": 8, "random_draws": 2, "gallery_size": 4},
}
# Wall-clock measurements live in metrics/timing.json only (uncommitted, no DVC output): the one
# file allowed to differ between two runs. Everything else must match byte for byte.
TIMING_FILE = "metrics/timing.json"

GUARD = '''
import os, socket
_LOG = os.environ.get("PIN_NET_LOG")
def _refuse(what):
    if _LOG:
        with open(_LOG, "a") as f:
            f.write(f"{os.getpid()} {what}\\n")
    raise OSError(f"network access refused by the offline guard: {what}")
_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex
def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _refuse(f"connect {address!r}")
    return _connect(self, address)
def connect_ex(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _refuse(f"connect_ex {address!r}")
    return _connect_ex(self, address)
def getaddrinfo(host, *args, **kwargs):
    _refuse(f"getaddrinfo {host!r}")
socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
'''


# ------------------------------------------------------------------------------------------------
# scratch repositories
# ------------------------------------------------------------------------------------------------
def _git(cwd: Path, *args: str) -> str:
    out = subprocess.run(["git", "-c", "user.name=kill-anywhere", "-c", "user.email=kill@example.invalid",
                          "-c", "commit.gpgsign=false", *args], cwd=cwd, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"git {' '.join(args)} failed in {cwd}:\n{out.stdout}{out.stderr}")
    return out.stdout


def project_files(root: Path) -> list[str]:
    listed = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    keep = []
    for rel in sorted(set(filter(None, listed))):
        if rel in EXCLUDE_FILES or any(rel == d or rel.startswith(d + "/") for d in EXCLUDE_TOP):
            continue
        if (root / rel).is_file():
            keep.append(rel)
    return keep


def make_repo(dest: Path, profile: dict) -> Path:
    dest.mkdir(parents=True)
    for rel in project_files(ROOT):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    for section, values in profile.items():
        for key, value in values.items():
            if key not in params[section]:
                raise SystemExit(f"params.yaml has no {section}.{key}: update PROFILE in {__file__}")
            params[section][key] = value
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _git(dest, "init", "--quiet")
    _git(dest, "add", "-A")
    _git(dest, "commit", "--quiet", "-m", "kill-anywhere snapshot")
    return dest


def make_env(repo: Path, guard_dir: Path, net_log: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join([str(repo), str(guard_dir)]),  # the snapshot's pin, then the guard
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
        HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", DVC_NO_ANALYTICS="1", TQDM_DISABLE="1",
        DVC_SITE_CACHE_DIR=str(repo.parent / f"{repo.name}-site-cache"),
        PIN_NET_LOG=str(net_log),
    )
    for var in ("DVC_EXP_BASELINE_REV", "DVC_ROOT", "DVC_STAGE"):
        env.pop(var, None)
    return env


# ------------------------------------------------------------------------------------------------
# running and killing
# ------------------------------------------------------------------------------------------------
@dataclass
class Attempt:
    cmd: list[str]
    lines: list[tuple[float, str]] = field(default_factory=list)
    marker_at: float | None = None
    killed_at: float | None = None
    rc: int | None = None
    seconds: float = 0.0

    @property
    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def stage_times(self) -> dict[str, float]:
        """Seconds from each "Running stage" line to the next one (or the end)."""
        starts = [(t, line.split("'")[1]) for t, line in self.lines if line.startswith("Running stage '")]
        end = self.lines[-1][0] if self.lines else 0.0
        return {name: (starts[i + 1][0] if i + 1 < len(starts) else end) - t
                for i, (t, name) in enumerate(starts)}


def run(cmd: list[str], repo: Path, env: dict, marker: str | None = None, delay: float | None = None,
        timeout: float = 1800) -> Attempt:
    """Run ``cmd``; with ``marker`` and ``delay``, SIGKILL its process group ``delay`` seconds
    after the first output line that starts with ``marker`` (unless it ended before)."""
    att = Attempt(cmd)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1, start_new_session=True)
    seen = threading.Event()

    def read():
        for raw in proc.stdout:
            now = time.perf_counter() - t0
            line = raw.rstrip("\n")
            att.lines.append((now, line))
            if marker and att.marker_at is None and line.startswith(marker):
                att.marker_at = now
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.perf_counter() + timeout
    if marker is not None and delay is not None:
        while not seen.is_set() and proc.poll() is None and time.perf_counter() < deadline:
            seen.wait(0.05)
        if seen.is_set():
            kill_at = t0 + att.marker_at + delay
            while proc.poll() is None and time.perf_counter() < kill_at:
                time.sleep(min(0.02, max(0.0, kill_at - time.perf_counter())))
            if proc.poll() is None:
                att.killed_at = time.perf_counter() - t0
                os.killpg(proc.pid, signal.SIGKILL)
    try:
        proc.wait(timeout=max(1.0, deadline - time.perf_counter()))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    reader.join(timeout=10)
    att.rc = proc.returncode
    att.seconds = time.perf_counter() - t0
    return att


def stage_outs(repo: Path, stage: str) -> list[str]:
    spec = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"][stage]
    outs = []
    for kind in ("outs", "metrics", "plots"):
        for o in spec.get(kind, []):
            outs.append(next(iter(o)) if isinstance(o, dict) else o)
    return outs


def reset_stage(repo: Path, stage: str) -> None:
    """Delete a finished stage's outputs (persistent ones too) so that it runs from the start."""
    for rel in stage_outs(repo, stage):
        p = repo / rel
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


# ------------------------------------------------------------------------------------------------
# hashes
# ------------------------------------------------------------------------------------------------
def output_hashes(repo: Path) -> dict[str, str]:
    out = {}
    for top in OUTPUT_DIRS:
        for p in sorted((repo / top).rglob("*")):
            if p.is_file():
                rel = p.relative_to(repo).as_posix()
                if rel != TIMING_FILE:
                    out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    for name, st in sorted(lock.get("stages", {}).items()):
        for o in st.get("outs", []):
            out[f"dvc.lock:{name}:{o['path']}"] = o.get("md5", "")
    return out


def lock_is_torn(repo: Path, env: dict) -> bool:
    """DVC writes dvc.lock in place (open, truncate, write), not by rename: a SIGKILL inside that
    write leaves a file DVC itself refuses ("'./dvc.lock' validation failed"). Our stages cannot
    prevent it; the user's fix is to restore the last good lock (``git checkout dvc.lock``)."""
    if not (repo / "dvc.lock").exists():
        return False
    status = run([str(DVC), "status"], repo, env)
    return "dvc.lock' validation failed" in status.text or "dvc.lock' is invalid" in status.text


def leftovers(repo: Path) -> list[str]:
    """Temporary files or folders, and training checkpoints, left in the outputs."""
    found = []
    for top in OUTPUT_DIRS:
        for p in (repo / top).rglob("*"):
            if p.name.endswith((".tmp", ".old")) or p.name.endswith("_checkpoints"):
                found.append(p.relative_to(repo).as_posix())
    return sorted(found)


# ------------------------------------------------------------------------------------------------
# the experiment
# ------------------------------------------------------------------------------------------------
def describe_kill(att: Attempt, stage: str) -> str:
    """Where the kill landed: in the stage's command, or after it, while DVC recorded outputs."""
    before = [line for t, line in att.lines if att.killed_at is None or t <= att.killed_at]
    running = [line.split("'")[1] for line in before if line.startswith("Running stage '")]
    where = running[-1] if running else "dvc start-up"
    if any(line.startswith(f"[{where}] done in") for line in before):
        return f"{where}: after its command, while dvc records the outputs"
    if where != stage:
        return f"{where}"
    return f"{stage}: inside the command"


def resume_evidence(att: Attempt, stage: str) -> str | None:
    """What a run said about the work a killed run of ``stage`` left, or None when it did not
    run ``stage``."""
    if f"Running stage '{stage}'" not in att.text:
        return None
    lines = att.text.splitlines()
    said = ""
    done = next((ln for ln in lines if ln.startswith(f"[{stage}] done in")), None)
    if stage == "train":  # it says so once the features are computed, before the first step
        said = next((ln.strip() for ln in lines if "resuming from step" in ln),
                    "started from step 0" if done else "")
    if done is None:
        return (said + "; " if said else "") + "killed again"
    if stage == "generate" and "reused" in done:
        return done[done.rindex("(") + 1:].rstrip(")")
    if stage == "compose" and "shards written" in done:
        return done[done.index("shards written"):]
    if stage == "pretrain_vlm":
        return "restarted from scratch, finished"
    return (said + ", finished") if said else "finished"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", default="3", help="kills per stage: a number (default 3) or stage=n,... "
                    "(e.g. generate=1,compose=2)")
    ap.add_argument("--stages", default=",".join(LONG_STAGES), help="stages to kill, in pipeline order")
    ap.add_argument("--target", default=None, help="dvc repro target (default: the whole pipeline)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None, help="scratch folder (kept); default: a temporary one")
    ap.add_argument("--min-frac", type=float, default=0.1, help="kill delay: at least this share of the stage's time")
    ap.add_argument("--max-frac", type=float, default=0.9, help="kill delay: at most this share")
    ap.add_argument("--profile", type=str, default=None, help="JSON overrides of PROFILE, e.g. '{\"train\": {\"steps\": 20}}'")
    args = ap.parse_args(argv)

    stages = [s for s in args.stages.split(",") if s]
    if "=" in args.kills:
        args.kills = {k: int(v) for k, v in (item.split("=") for item in args.kills.split(","))}
        stages = list(args.kills)
    else:
        args.kills = dict.fromkeys(stages, int(args.kills))
    for s in stages:
        if s not in PIPELINE:
            ap.error(f"unknown stage {s!r}; choose from {', '.join(PIPELINE)}")
    stages.sort(key=PIPELINE.index)
    target = [args.target] if args.target else []
    profile = json.loads(json.dumps(PROFILE))
    for section, values in json.loads(args.profile or "{}").items():
        profile.setdefault(section, {}).update(values)

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="kill-anywhere-")
        work = Path(tmp.name)
    else:
        work = args.workdir.resolve()
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
    try:
        return experiment(work, stages, target, args, profile)
    finally:
        if tmp is not None:
            tmp.cleanup()


def experiment(work: Path, stages: list[str], target: list[str], args, profile: dict) -> int:
    rng = random.Random(args.seed)
    guard = work / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(GUARD)
    net_log = work / "network-attempts.log"
    ok = True

    ref = make_repo(work / "ref", profile)
    env_ref = make_env(ref, guard, net_log)
    print(f"[kill-anywhere] reference: dvc repro {' '.join(target)} (uninterrupted) in {ref}", flush=True)
    r = run([str(DVC), "repro", *target], ref, env_ref)
    if r.rc != 0:
        print(r.text)
        print(f"[kill-anywhere] the reference run failed (exit {r.rc})")
        return 1
    times = r.stage_times()
    print(f"[kill-anywhere] reference took {r.seconds:.1f}s; per stage: "
          + ", ".join(f"{k} {v:.1f}s" for k, v in times.items()), flush=True)
    ref_hashes = output_hashes(ref)

    repo = make_repo(work / "kill", profile)
    env = make_env(repo, guard, net_log)
    rows: list[dict] = []  # one per try: stage, delay, where the kill landed, outcome
    attempts: list[Attempt] = []
    torn_locks = 0
    for stage in stages:
        if stage not in times:
            print(f"[kill-anywhere] {stage} did not run in the reference run; skipped")
            continue
        kills, tries, span, fresh = 0, 0, times[stage], False
        while kills < args.kills[stage] and tries < 4 * args.kills[stage]:
            tries += 1
            delay = rng.uniform(args.min_frac, args.max_frac) * span
            # after a reset DVC would check the outputs out of its cache ("is cached - skipping run")
            # instead of running the stage: force this one stage alone
            cmd = [str(DVC), "repro", *(["--force", "--single-item"] if fresh else []), stage]
            lock_before = (repo / "dvc.lock").read_bytes() if (repo / "dvc.lock").exists() else None
            att = run(cmd, repo, env, marker=f"Running stage '{stage}'", delay=delay)
            attempts.append(att)
            torn = att.killed_at is not None and lock_is_torn(repo, env)
            if torn:  # DVC rewrites dvc.lock in place; what a user does: put the last good one back
                torn_locks += 1
                if lock_before is None:
                    (repo / "dvc.lock").unlink()
                else:
                    (repo / "dvc.lock").write_bytes(lock_before)
            with open(work / "attempts.log", "a") as log:
                log.write(f"\n=== try {len(attempts)}: {stage}, kill +{delay:.2f}s after its start, "
                          f"killed={att.killed_at is not None}, exit {att.rc}\n{att.text}\n")
            if att.killed_at is None:
                if att.rc != 0:
                    print(att.text)
                    print(f"[kill-anywhere] {stage}: a rerun FAILED (exit {att.rc})")
                    return 1
                rows.append({"stage": stage, "delay": delay, "landed": "- (the stage finished first)",
                             "at": len(attempts), "outcome": "outputs deleted, stage started again"})
                reset_stage(repo, stage)
                # this machine is faster now than during the reference run (a load that ended):
                # aim at the stage's time in the run that just finished, not only a fixed fraction
                span = min(span * 0.6, att.stage_times().get(stage, span))
                fresh = True
                continue
            kills += 1
            fresh = False
            landed = describe_kill(att, stage) + (" (DVC's own dvc.lock write torn: the lock from before "
                                                  "the kill put back)" if torn else "")
            rows.append({"stage": stage, "delay": delay, "landed": landed, "at": len(attempts)})
            print(f"[kill-anywhere] kill {sum('outcome' not in r for r in rows)}: {stage} +{delay:.2f}s "
                  f"-> {rows[-1]['landed']}", flush=True)
    print(f"[kill-anywhere] finishing: dvc repro {' '.join(target)} (uninterrupted)", flush=True)
    fin = run([str(DVC), "repro", *target], repo, env)
    attempts.append(fin)
    if fin.rc != 0:
        print(fin.text)
        print(f"[kill-anywhere] the final run failed (exit {fin.rc})")
        return 1
    for row in rows:  # what the next run of the killed stage did with the work left behind
        if "outcome" not in row:
            row["outcome"] = (resume_evidence(attempts[row["at"]], row["stage"])
                              or "not rerun: dvc had recorded it before the kill")

    got = output_hashes(repo)
    names = sorted(set(ref_hashes) | set(got))
    diff = [n for n in names if ref_hashes.get(n) != got.get(n)]
    left = leftovers(repo)
    status = run([str(DVC), "status", *target], repo, env)
    clean = status.rc == 0 and ("up to date" in status.text or "didn't change" in status.text)
    net = net_log.read_text().splitlines() if net_log.exists() else []

    n_kills = sum(1 for r in rows if r["landed"][0] != "-")
    print("\n| # | stage | kill after (s) | landed in | next run of the stage |")
    print("|---|---|---|---|---|")
    for i, r in enumerate(rows, 1):
        print(f"| {i} | {r['stage']} | {r['delay']:.2f} | {r['landed']} | {r['outcome']} |")
    groups: dict[str, list[bool]] = {}
    for n in names:
        key = n.split(":")[0] if n.startswith("dvc.lock") else "/".join(n.split("/")[:2])
        groups.setdefault(key, []).append(ref_hashes.get(n) == got.get(n))
    print("\n| outputs | files | identical |")
    print("|---|---|---|")
    for key, same in groups.items():
        print(f"| {key} | {len(same)} | {'yes' if all(same) else f'NO ({same.count(False)} differ)'} |")
    print(f"\nkills: {n_kills}; output files compared: {len(names)}; differing: {len(diff)}"
          + (f" ({', '.join(diff[:8])})" if diff else ""))
    print(f"leftover temporary files / checkpoints: {left or 'none'}")
    print(f"kills that tore DVC's own dvc.lock write (restored, as a user would): {torn_locks}")
    print(f"dvc status after the final run: {'clean' if clean else 'NOT clean: ' + status.text[-300:]}")
    print(f"network connection attempts (dvc and every stage): {len(net)}" + (f" e.g. {net[0]}" if net else ""))
    ok = ok and not diff and not left and clean and not net and n_kills >= sum(args.kills.values())
    print(f"RESULT: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
