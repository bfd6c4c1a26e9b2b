"""The benchmarks run end to end in CI-sized form (not timed: numbers come from the scripts)."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_train_step_bench_tiny(tmp_path):
    out = tmp_path / "train_step.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "train_step.py"), "--tiny", "--batch", "2",
                           "--eval-batch", "2", "--steps", "1", "--warmup", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": ""})
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert {(r["arch"], r["config"]) for r in rows} == {(a, c) for a in ("mini", "openflamingo3b", "blip2")
                                                         for c in ("baseline", "fast")}
    for r in rows:
        assert "error" not in r, r
        assert r["samples_per_s"] > 0 and r["eval_queries_per_s"] > 0 and r["flops_per_step"] > 0
    assert "samples/s" in proc.stdout
