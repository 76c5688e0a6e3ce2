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


def test_the_jwt_secret_has_no_published_default():
    import yaml

    env = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())["x-airflow-env"]
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"].startswith("${AIRFLOW_JWT_SECRET:?"), \
        "compose must refuse to start without a secret of the user's own"


def test_compose_env_generates_the_secrets_once_and_keeps_the_users(tmp_path):
    sys.path.insert(0, str(ROOT / "devstack"))
    from compose_env import ensure_secrets

    first, second = tmp_path / "a.env", tmp_path / "b.env"
    assert ensure_secrets(first) == ["AIRFLOW_JWT_SECRET", "AIRFLOW_FERNET_KEY"]
    assert first.stat().st_mode & 0o077 == 0  # readable by its owner only
    ensure_secrets(second)
    values = dict(line.split("=", 1) for line in first.read_text().splitlines())
    assert len(values["AIRFLOW_JWT_SECRET"]) >= 64 and values["AIRFLOW_JWT_SECRET"] not in second.read_text()
    from cryptography.fernet import Fernet

    Fernet(values["AIRFLOW_FERNET_KEY"].encode())  # a key Airflow accepts
    before = first.read_text()
    assert ensure_secrets(first) == [] and first.read_text() == before  # a restart keeps the tokens valid

    mine = tmp_path / "mine.env"
    mine.write_text("AIRFLOW_PORT=8081\nAIRFLOW_JWT_SECRET=chosen-by-the-user\n")
    mine.chmod(0o644)
    assert ensure_secrets(mine) == ["AIRFLOW_FERNET_KEY"]
    assert mine.stat().st_mode & 0o077 == 0  # no longer readable by others once it holds a secret
    assert "AIRFLOW_JWT_SECRET=chosen-by-the-user\n" in mine.read_text() and "AIRFLOW_PORT=8081" in mine.read_text()
