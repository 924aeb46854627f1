"""A deployment on the embedded default (SQLite, local blobs) never loads the
PostgreSQL driver or the S3 client: they cost memory (about 9 MB and 26 MB) and
start-up time in every process, the server and each CLI command alike."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

OPTIONAL = ("psycopg", "boto3", "botocore")

_PROBE = """
import json, sys
from strongroom.cli import main
from strongroom.config import Settings
from strongroom.api.services import Services

config = sys.argv[1]
codes = [main(["--config", config, *argv]) for argv in (["check"], ["user", "list"])]
services = Services.open(Settings(data_dir=sys.argv[2]))
services.close()
print(json.dumps({"codes": codes, "loaded": sorted(
    name for name in sys.modules if name.split(".")[0] in sys.argv[3:])}))
"""


def _loaded_after_default_use(tmp_path: Path) -> dict[str, object]:
    data_dir = tmp_path / "state"
    config = tmp_path / "strongroom.toml"
    config.write_text(f'data_dir = "{data_dir}"\n')
    # As a service that ran once leaves it: `check` refuses a missing blob folder.
    (data_dir / "blobs").mkdir(parents=True)
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(config), str(data_dir), *OPTIONAL],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_default_deployment_loads_no_optional_driver(tmp_path: Path) -> None:
    result = _loaded_after_default_use(tmp_path)

    assert result["codes"] == [0, 0]
    assert result["loaded"] == []


@pytest.mark.parametrize("module", OPTIONAL)
def test_the_optional_drivers_are_installed(module: str) -> None:
    # The probe above would pass vacuously if a driver were missing.
    __import__(module)
