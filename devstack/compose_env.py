"""Write the secrets docker-compose.yaml needs to `.env` (docker compose reads it), once per machine.

docker-compose.yaml has no default for AIRFLOW_JWT_SECRET: a default published in the repository would let
anyone who reads it sign task tokens for every stack started with it. This script generates one, and a
Fernet key so that connections and variables stored in the metadata database are encrypted. A value
already in `.env` (or chosen by the user) is kept, so a restart never invalidates running tasks' tokens.

    python devstack/compose_env.py [path/to/.env]      (make compose-env)
"""

from __future__ import annotations

import base64
import secrets
import sys
from pathlib import Path

GENERATED = {
    "AIRFLOW_JWT_SECRET": lambda: secrets.token_urlsafe(48),
    # Airflow's Fernet key: 32 random bytes, URL-safe base64 (cryptography.fernet.Fernet.generate_key()).
    "AIRFLOW_FERNET_KEY": lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
}


def ensure_secrets(env_file: Path) -> list[str]:
    """Append each missing secret to `env_file` (created with mode 0600); the names it added."""
    lines = env_file.read_text().splitlines() if env_file.exists() else []
    present = {line.split("=", 1)[0].strip() for line in lines if "=" in line and not line.lstrip().startswith("#")}
    added = [name for name in GENERATED if name not in present]
    if added:
        lines += [f"{name}={GENERATED[name]()}" for name in added]
        env_file.touch(mode=0o600, exist_ok=True)
        env_file.chmod(0o600)  # a .env the user made readable by others must not receive secrets as it is
        env_file.write_text("\n".join(lines) + "\n")
    return added


def main(argv: list[str]) -> int:
    env_file = Path(argv[0]) if argv else Path(__file__).resolve().parents[1] / ".env"
    added = ensure_secrets(env_file)
    print(f"{env_file}: generated {', '.join(added)}" if added else f"{env_file}: secrets already set, kept")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
