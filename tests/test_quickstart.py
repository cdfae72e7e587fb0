"""The README's first command runs the seed's example end to end on the embedded default."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support import free_port

ROOT = Path(__file__).parents[1]


def test_the_quickstart_runs_the_seed_event_to_completed(tmp_path: Path) -> None:
    env = {**os.environ, "MACHINERY_DATA_DIR": str(tmp_path)}
    env.pop("MACHINERY_BROKER_URL", None)
    env.pop("MACHINERY_MONGO_URI", None)

    result = subprocess.run(
        [sys.executable, "-m", "examples.quickstart", "--port", str(free_port())],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    event = json.loads(result.stdout[result.stdout.index("{") :])
    assert event["status"] == "completed"
    assert event["outputs"] == {"message": "! GNINROM EHT NI ESIR LLIW NUS EHT", "space_count": 7}
    assert [s["status"] for s in event["steps"]] == ["completed"] * 3
    assert (tmp_path / "machinery.db").exists()
