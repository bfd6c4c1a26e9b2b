"""Several processes from a params key: a stage whose ``<section>.processes`` is N > 1 runs itself
again under ``accelerate launch`` (one process per GPU), so ``dvc repro`` and ``dvc exp run`` use
several GPUs with the stage's command unchanged (``python stages/train.py``) and N = 1 is exactly
the one-process run. The launched processes see ``WORLD_SIZE`` and do not relaunch."""
from __future__ import annotations

import os
import sys


def accelerate_command(processes: int, argv: list[str], port: int | None = None) -> list[str]:
    """``accelerate launch`` of ``argv`` (a script and its arguments) on ``processes`` processes of
    this machine; every value given, so no accelerate config file changes the run."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if port is not None:
        cmd += ["--main_process_port", str(port)]
    return [*cmd, *argv]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launched() -> bool:
    """True inside a process that ``accelerate launch`` / ``torchrun`` started."""
    return "LOCAL_RANK" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1


def relaunch(processes: int, key: str) -> None:
    """With ``processes`` > 1 and not yet launched, replace this process by the same command under
    ``accelerate launch``; it never returns then. Without a GPU the processes run on the CPU
    (gloo), which is how the tests run it. ``key`` names the param in messages."""
    if processes <= 1 or launched():
        return
    import torch

    env = dict(os.environ)
    if not torch.cuda.is_available():
        env["ACCELERATE_USE_CPU"] = "1"
    elif torch.cuda.device_count() < processes:
        from pin.errors import PinError

        raise PinError(f"{key}={processes} but torch sees {torch.cuda.device_count()} GPU(s)")
    # a free port of this machine, not accelerate's fixed 29500: two launched stages at once
    # (`dvc queue start -j 2`) would meet at the same rendezvous
    port = int(os.environ.get("PIN_MAIN_PROCESS_PORT") or free_port())
    cmd = accelerate_command(processes, sys.argv, port)
    print(f"[{key}] {processes} processes: {' '.join(cmd[1:])}", flush=True)
    sys.stderr.flush()
    os.execve(sys.executable, cmd, env)
