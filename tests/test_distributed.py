"""Joint training split over two processes (torchrun / accelerate launch, gloo on the CPU): DDP averages the
gradients, only the main process writes the run."""

import os
import subprocess
import sys

from tests.conftest import write_clustered_csv


def test_two_process_training_writes_one_complete_run(tmp_path):
    write_clustered_csv(tmp_path / "data")
    env = {**os.environ, "DEFTREC_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "deftrec_tui.cli",
               "train", "--dataset", f"csv:{tmp_path / 'data'}", "--out", str(tmp_path / "runs"), "--name", "ddp",
               "--llm", "tiny", "--profile", "tiny", "--cf-epochs", "10", "--threads", "1"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "joint training in 2 processes" in done.stdout + done.stderr
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["ddp"]  # no partial or resume folder left
    assert done.stdout.strip().splitlines()[-1].endswith("ddp")  # printed once, by the main process
    evaluated = subprocess.run([sys.executable, "-m", "deftrec_tui.cli", "eval", str(tmp_path / "runs" / "ddp")],
                               capture_output=True, text=True, env=env, timeout=120)
    assert evaluated.returncode == 0 and "deftrec" in evaluated.stdout
    unnamed = subprocess.run(command[:command.index("--name")] + command[command.index("--name") + 2:],
                             capture_output=True, text=True, env=env, timeout=300)
    assert unnamed.returncode != 0 and "needs --stage all and --name" in unnamed.stderr
