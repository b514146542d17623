"""The zoo's catalogue is torch-free: the API names ``zoo:<name>`` models without importing torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Everything the API does with a zoo model string, on a data directory where nothing is trained.
CODE = """
import sys
import phasescope.zoo, phasescope.models.loading, backend.main
from fastapi.testclient import TestClient
from phasescope.errors import ModelNotFound

ref = phasescope.models.loading.parse_model_spec("zoo:induction-2l")
assert ref.kind == "zoo", ref
assert not phasescope.zoo.is_trained("induction-2l")
spec = phasescope.zoo.get_spec("zoo:induction-2l")
assert spec.n_layers == 2 and spec.checkpoint_steps and spec.expected_seconds > 0
assert phasescope.zoo.zoo_series_dir("induction-2l").name == "induction-2l"
assert sorted(phasescope.zoo.ZOO) == ["grokking-p59", "induction-1l", "induction-2l"]
assert [m for m in phasescope.models.loading.list_models() if m.kind == "zoo"]
try:
    phasescope.models.loading.list_checkpoints("zoo:induction-2l")
except ModelNotFound:
    pass
else:
    raise AssertionError("an untrained zoo series has no checkpoints")
response = TestClient(backend.main.create_app()).get("/api/v1/models/zoo:induction-2l/checkpoints")
assert response.status_code == 404, (response.status_code, response.text)
print("torch" in sys.modules)
"""


def test_zoo_catalogue_and_api_do_not_import_torch(tmp_path: Path) -> None:
    env = {**os.environ, "PHASESCOPE_DATA_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False", "torch was imported:\n" + out.stderr
