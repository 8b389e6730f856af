"""Out of memory in generation or export lowers the batch size and the work goes on with identical results."""

import shutil

import pytest
import torch

from tests.reliability import tally


def test_adaptive_batches_halve_on_out_of_memory_and_keep_order():
    from engine.services.memory import adaptive_batches, is_out_of_memory
    told = []

    def work(batch):
        if len(batch) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [x * 10 for x in batch]

    out = list(adaptive_batches(list(range(11)), 8, work, lambda size, error: told.append(size)))
    assert [x for _, r in out for x in r] == [x * 10 for x in range(11)]
    assert told == [4, 2] and all(len(b) <= 2 for b, _ in out)
    with pytest.raises(ValueError):
        list(adaptive_batches([1, 2], 2, lambda b: (_ for _ in ()).throw(ValueError("not memory"))))
    with pytest.raises(RuntimeError):
        list(adaptive_batches([1], 4, lambda b: (_ for _ in ()).throw(RuntimeError("CUDA out of memory"))))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8GB"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    tally("out-of-memory cases survived")


def test_export_continues_with_smaller_batches_after_out_of_memory(tiny_run, tmp_path):
    from engine.services.export import export_deftrec
    from engine.services.loading import open_deftrec
    from engine.services.run import Run
    a, b = (Run.open(shutil.copytree(tiny_run, tmp_path / name)) for name in ("a", "b"))
    model = open_deftrec(a)
    export_deftrec(a, tmp_path / "a.csv", k=10, recompute=True, batch_size=16, model_loader=lambda: model)
    real = model.recommend

    def small_only(users, *args, **kwargs):
        if len(users) > 5:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(users, *args, **kwargs)

    model.recommend = small_only
    sizes = []
    summary = export_deftrec(b, tmp_path / "b.csv", k=10, recompute=True, batch_size=16, model_loader=lambda: model,
                             on_smaller=lambda size, error: sizes.append(size))
    assert summary["computed"] == 60 and sizes == [8, 4]
    import csv
    rows_a, rows_b = (list(csv.reader((tmp_path / f"{n}.csv").open())) for n in ("a", "b"))
    assert [r[:5] for r in rows_a] == [r[:5] for r in rows_b]  # same users, ranks, items
    # other batch sizes pad prompts differently: scores agree to float32 noise
    assert all(abs(float(x[7]) - float(y[7])) < 1e-5 for x, y in zip(rows_a[1:], rows_b[1:]))
    tally("out-of-memory cases survived")


def test_joint_training_halves_the_micro_batch_and_doubles_accumulation(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from deftrec_tui.cli import app
    from tests.conftest import write_clustered_csv
    from train.objective import JointObjective
    real = JointObjective.forward

    def forward(self, batch, generator):
        if batch.x_pos.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, batch, generator)

    monkeypatch.setattr(JointObjective, "forward", forward)
    write_clustered_csv(tmp_path / "data")
    result = CliRunner().invoke(app, ["train", "--dataset", f"csv:{tmp_path / 'data'}", "--out", str(tmp_path / "runs"),
                                      "--name", "oom", "--llm", "tiny", "--profile", "tiny", "--cf-epochs", "5",
                                      "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "out of memory at step 1; continuing with micro-batches of 2 users × 2 accumulation steps" in \
        " ".join(result.output.split())
    assert (tmp_path / "runs" / "oom" / "config.json").exists()
    tally("out-of-memory cases survived")


def test_max_memory_turns_an_oversized_allocation_into_an_error_the_loops_handle():
    import subprocess
    import sys
    code = ("import torch\nfrom engine.services.memory import is_out_of_memory, limit_memory\nlimit_memory(6)\n"
            "small = torch.ones(1024, 1024)\n"
            "try:\n    torch.empty(8 * 1024 ** 3, dtype=torch.uint8)\nexcept BaseException as e:\n"
            "    print('caught', is_out_of_memory(e))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "caught True" in done.stdout, done.stdout + done.stderr
    tally("out-of-memory cases survived")
