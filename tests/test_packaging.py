"""An installed wheel (not only an editable checkout) carries conf/ and experiments/ and finds them."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from tests.conftest import ROOT, hfx_env


@pytest.mark.slow
def test_wheel_carries_and_finds_configs(cache, tmp_path) -> None:
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(tmp_path / "dist"), str(ROOT)], capture_output=True, text=True, timeout=300)
    if r.returncode != 0 and "hatchling" in r.stderr:
        pytest.skip("hatchling is not installed for a no-isolation build")
    assert r.returncode == 0, r.stderr
    (wheel,) = list((tmp_path / "dist").glob("hfx-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "hfx/_conf/train.yaml" in names and "hfx/_conf/model/minilm.yaml" in names
    assert "hfx/_experiments/sst2_minilm_lora.yaml" in names
    assert "hfx/resources/demo_sentiment/train.csv" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    # Run from an unrelated folder with only the unpacked wheel on the path: no checkout to fall back on.
    code = ("import hfx, hfx.paths as p; from hfx.cli import main; "
            "print(hfx.__file__); print(p.conf_dir()); main(['train', 'experiment=sst2_minilm_lora', '--cfg', 'job'])")
    env = {**hfx_env(cache), "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith(str(site)) and lines[1] == str(site / "hfx" / "_conf")
    assert "experiment_name: sst2_minilm_lora" in out.stdout
