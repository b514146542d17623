"""The API process starts without torch: jobs are enqueued by dotted name."""

from __future__ import annotations

import subprocess
import sys


def test_backend_and_client_do_not_import_torch() -> None:
    code = (
        "import sys; from backend.main import create_app; import phasescope.client, phasescope.jobs;"
        "create_app().openapi(); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
