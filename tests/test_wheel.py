"""The installed wheel, as a new user gets it: built from this checkout, installed in a fresh
virtual environment, run from an empty folder — `qsim --version` and `qsim quantize` on the
bundled example (package data, not the checkout's files)."""
from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*argv, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{argv}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.mark.slow
def test_the_wheel_runs_the_bundled_example_from_an_empty_folder(tmp_path):
    # the source without tests, venv or build output, so the checkout itself stays untouched
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "tests", "build", "dist", "*.egg-info", "__pycache__", ".hypothesis",
        "qsim_out", "qsim_analysis", "benchmarks", "docs"))
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", tmp_path / "dist",
        src)
    wheel, = (tmp_path / "dist").glob("qsim_ref-*.whl")

    # a fresh venv; the runtime dependencies (numpy, numba, jsonschema, onnx) come from this
    # interpreter's site-packages through a plain path entry, which runs none of its .pth files
    # (so this checkout's editable install stays invisible)
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    py = venv / "bin" / "python"
    purelib = Path(run(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
                   .stdout.strip())
    deps = [p for p in site.getsitepackages() + [sysconfig.get_paths()["purelib"]]
            if Path(p).is_dir()]
    (purelib / "zz_runtime_deps.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    run(sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--quiet", wheel)

    empty = tmp_path / "empty"
    empty.mkdir()
    where = run(py, "-c", "import qsim; print(qsim.__file__, qsim.__version__)", cwd=empty)
    path, version = where.stdout.split()
    assert Path(path).is_relative_to(venv), path           # the wheel's copy, not the checkout
    assert version == "0.1.0"

    assert run(venv / "bin" / "qsim", "--version", cwd=empty).stdout.strip() == \
        f"qsim {version} (qsim-ref)"
    out = run(venv / "bin" / "qsim", "quantize", "--quiet", cwd=empty).stdout
    assert "(the bundled example)" in out and "accuracy quantized:" in out
    doc = json.loads((empty / "qsim_out" / "digits_cnn.encodings").read_text())
    assert doc["version"] == "1.0.0" and doc["activation_encodings"]
    assert sorted(p.name for p in empty.iterdir()) == ["qsim_out"]
