"""Packaging: import names hilif.pipeline/model/train, nothing bare installed, console scripts, one onnxruntime."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"common": "hilif.common", "pipeline": "hilif.pipeline", "model": "hilif.model", "train": "hilif.train"}
SCRIPTS = {
    "hilif-prep": "hilif.pipeline.cli:main",
    "hilif-train": "hilif.train.cli:train_main",
    "hilif-eval": "hilif.train.cli:eval_main",
}


def _outside_python(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in this environment's Python from a folder that is not the repository (so only installed
    packages are importable, not the checkout's folders)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", env=env, timeout=120)


def _outside_json(code: str):
    """`_outside_python` for a snippet that prints one JSON value: that value, decoded."""
    r = _outside_python("import json\n" + code)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _script(name: str) -> str:
    """The console script of the running environment (the venv's bin folder need not be on PATH)."""
    exe = Path(sys.executable).with_name(name)
    return str(exe) if exe.exists() else (shutil.which(name) or name)


def test_import_names_map_to_the_top_level_folders():
    import hilif.common
    import hilif.model
    import hilif.pipeline
    import hilif.train

    for folder, name in PACKAGES.items():
        mod = sys.modules[name]
        assert Path(mod.__file__).resolve().parent == (REPO / folder).resolve()
    import hilif.pipeline.datasets  # a sub-package
    import hilif.pipeline.schema

    assert Path(hilif.pipeline.schema.__file__).parent == Path(hilif.pipeline.__file__).parent


def test_installed_environment_has_no_bare_model_train_pipeline():
    found = _outside_json(
        "import importlib.util as u\n"
        "print(json.dumps({n: u.find_spec(n) is not None for n in "
        "('hilif.pipeline','hilif.model','hilif.train','pipeline','model','train')}))"
    )
    assert found["hilif.pipeline"] and found["hilif.model"] and found["hilif.train"]
    assert not found["pipeline"] and not found["model"] and not found["train"], found


def test_wheel_holds_only_the_hilif_namespace(tmp_path):
    """`pip install .` installs exactly what this wheel holds: hilif/{pipeline,model,train}, no bare packages."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        assert (REPO / name).is_file(), f"{name} missing: pyproject needs it to build"
        shutil.copy(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in PACKAGES:
        shutil.copytree(REPO / folder, src / folder, ignore=ignore)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("hilif-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"hilif", next(t for t in tops if t.endswith(".dist-info"))}
    assert "hilif/__init__.py" not in names  # hilif is a namespace package
    # every module of every folder (sub-packages too) made it in under its hilif.* name
    for folder, name in PACKAGES.items():
        for py in (REPO / folder).rglob("*.py"):
            if "__pycache__" in py.parts:
                continue
            assert f"hilif/{folder}/{py.relative_to(REPO / folder).as_posix()}" in names, py
    assert any(n.startswith("hilif/pipeline/data/ffpp_splits/") and n.endswith("train.json") for n in names)
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    for script, target in SCRIPTS.items():
        assert f"{script} = {target}" in entry


def test_console_scripts_are_installed_and_answer_help():
    assert (
        _outside_json(
            "import importlib.metadata as md\n"
            "eps = {e.name: e.value for e in md.entry_points(group='console_scripts') if e.name.startswith('hilif-')}\n"
            "print(json.dumps(eps))"
        )
        == SCRIPTS
    )
    helps = {}
    for script in SCRIPTS:
        h = subprocess.run([_script(script), "--help"], capture_output=True, text=True, timeout=120)
        assert h.returncode == 0, (script, h.stderr)
        assert "Usage" in h.stdout
        helps[script] = h.stdout
    for command in ("demo", "extract", "inspect"):
        assert command in helps["hilif-prep"]


def test_one_working_onnxruntime():
    """insightface pulls in the CPU onnxruntime, which would overwrite onnxruntime-gpu's files: only one may be
    there."""
    import importlib.metadata as md

    installed = []
    for dist in ("onnxruntime", "onnxruntime-gpu"):
        try:
            md.version(dist)
            installed.append(dist)
        except md.PackageNotFoundError:
            pass
    assert len(installed) == 1, f"both onnxruntime packages installed: {installed}"
    ort = pytest.importorskip("onnxruntime")
    providers = ort.get_available_providers()
    assert "CPUExecutionProvider" in providers
    if installed == ["onnxruntime-gpu"]:
        assert "CUDAExecutionProvider" in providers
    # and it runs a model on the CPU
    import numpy as np
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"x": np.array([-1.0, 2.0], np.float32)})
    assert y.tolist() == [0.0, 2.0]


def test_offline_models_and_face_photos_are_installed():
    """What the demo and the dlib detector need is in the installed packages, no download."""
    from hilif.pipeline.demo import render as demo_render
    from hilif.pipeline.detectors import dlib as dlib_faces

    for name in ("shape_predictor_68_face_landmarks.dat", "mmod_human_face_detector.dat"):
        assert dlib_faces.model_path(name).stat().st_size > 100_000
    ids = demo_render.available_identities()
    assert len(ids["val"]) >= 2 and len(ids["test"]) >= 2 and len(ids["train"]) >= 3


def test_headless_opencv_only():
    """opencv-python (GUI, needs libGL) must not come in through insightface's dependencies."""
    import importlib.metadata as md

    assert md.version("opencv-python-headless")
    with pytest.raises(md.PackageNotFoundError):
        md.version("opencv-python")
    import cv2  # noqa: F401  (imports without libGL)


#: The longest a function of the packages may be: longer ones are split (tests and benches are exempt).
MAX_FUNCTION_LINES = 60


def test_no_function_in_the_packages_is_over_the_line_limit():
    import ast

    long = []
    for folder in PACKAGES:
        for py in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(py.read_text(), str(py))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        long.append(f"{py.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "split these functions:\n" + "\n".join(long)
