import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

INCLUDE = Path(__file__).resolve().parents[2] / "include"

# Runs in a fresh interpreter where importing airflow raises, as in AWS Lambda.
SCRIPT = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "airflow" or name.startswith("airflow."):
            raise ImportError("airflow is not importable here")
sys.meta_path.insert(0, Block())
import pkgutil, importlib, es_export
for m in pkgutil.walk_packages(es_export.__path__, "es_export."):
    importlib.import_module(m.name)
print("ok", sorted(n for n in sys.modules if n.startswith("es_export")))
"""


def test_core_package_imports_without_airflow():
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=INCLUDE, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert "es_export.pipeline" in out.stdout
