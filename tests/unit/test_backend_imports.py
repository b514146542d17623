"""The API process starts without torch: jobs are enqueued by dotted name."""

from __future__ import annotations

import os
import subprocess
import sys


def test_backend_and_client_do_not_import_torch() -> None:
    code = (
        "import sys; from backend.main import create_app; import phasescope.service.client, phasescope.service.queue;"
        "create_app().openapi();"
        # tl: models are validated and their checkpoints listed from the catalog, without torch.
        "from phasescope.models.loading import list_checkpoints, parse_model_spec;"
        "from backend.routes.models import tl_model_names;"
        "assert parse_model_spec('tl:pythia-70m').name == 'pythia-70m';"
        "assert len(list_checkpoints('tl:pythia-70m')) == 154 and list_checkpoints('tl:gpt2') == [0];"
        "assert 'gpt2' in tl_model_names();"
        # hub: models too: parsing, and a (refused, here) hub call for their branches and commits.
        "assert parse_model_spec('hub:org/run').kind == 'hub';"
        "import contextlib; from phasescope.errors import HubUnavailable; from phasescope.models.hub import revision_identity\n"
        "with contextlib.suppress(HubUnavailable):\n    revision_identity('hub:org/run', [0])\n"
        "print('torch' in sys.modules, 'transformer_lens' in sys.modules)"
    )
    # Nothing listens on port 9 of loopback: the hub call fails at once.
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "False False", out.stderr
