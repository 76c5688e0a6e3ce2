import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CHECK = Path(sys.executable).parent / "check-jsonschema"


def validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(CHECK), "--builtin-schema", "vendor.compose-spec", str(path)],
                          capture_output=True, text=True, check=False)


def test_docker_compose_is_valid_against_the_compose_spec():
    out = validate(ROOT / "docker-compose.yaml")
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_check_catches_an_invalid_file(tmp_path):
    bad = tmp_path / "compose.yaml"
    bad.write_text("services:\n  x:\n    image: 5\n    ports: 8080\n    restartt: always\n")
    assert validate(bad).returncode != 0
