"""docker-compose.yml is valid for Debian's docker-compose and says what a GPU deployment needs.

There is no Docker engine on CI machines, so `docker-compose config` (which validates and resolves the
file without one) is the check; docs/deployment.md says how to run it for real.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _config(**env: str) -> dict:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose is not installed: `make system-deps` installs Debian's package"
    result = subprocess.run(
        [exe, "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_file_is_valid_and_complete() -> None:
    config = _config()
    services = config["services"]
    assert set(services) == {"redis", "api", "worker"}
    assert "appendonly" in " ".join(services["redis"]["command"])
    for name in ("redis", "api"):
        assert services[name]["healthcheck"]["test"], f"{name} has no healthcheck"
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    # API and workers share one results store and Redis.
    for name in ("api", "worker"):
        assert any(
            str(v).startswith("phasescope-data:/data") or (isinstance(v, dict) and v.get("target") == "/data")
            for v in services[name]["volumes"]
        )
        assert services[name]["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    # Workers share one Hugging Face cache, so a hub revision is downloaded (and evicted) once.
    worker = services["worker"]
    assert worker["environment"]["HF_HUB_CACHE"] == "/hf-cache"
    assert any(
        str(v).startswith("hf-cache:/hf-cache") or (isinstance(v, dict) and v.get("target") == "/hf-cache")
        for v in worker["volumes"]
    )


@pytest.mark.parametrize("gpus", ["1", "4"])
def test_worker_replicas_follow_the_gpu_count(gpus: str) -> None:
    assert _config(PHASESCOPE_GPUS=gpus)["services"]["worker"]["deploy"]["replicas"] == int(gpus)


def test_dockerfiles_copy_only_what_exists() -> None:
    for dockerfile in ("docker/Dockerfile.api", "docker/Dockerfile.worker"):
        text = (ROOT / dockerfile).read_text()
        for source in re.findall(r"^COPY (\S+)", text, flags=re.M):
            assert (ROOT / source).exists(), f"{dockerfile} copies missing {source}"
    # The API image must not need torch: its requirements leave it out.
    assert "torch" not in (ROOT / "docker/requirements-api.txt").read_text().split("#")[0]


def test_the_installed_package_carries_its_data_files(tmp_path: Path) -> None:
    """The API image installs the project non-editable: the TL catalog and dashboard assets must ship."""
    import sys
    import zipfile

    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            str(ROOT),
            "-w",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("phasescope-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "phasescope/models/data/tl_catalog.json" in names
    assert "frontend/assets/style.css" in names
