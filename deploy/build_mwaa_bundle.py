"""Build dist/mwaa/: exactly what to upload to an Amazon MWAA environment's S3 bucket.

Why a bundle: in the repo the DAG files import `es_export` and `es_export_airflow` from include/, which the
dev tools put on sys.path (pytest's pythonpath, PYTHONPATH in the Makefile). MWAA only puts its dags folder
(and plugins folder) on sys.path, so the packages have to travel inside dags/ as top-level packages, and a
.airflowignore keeps the DAG processor from parsing their modules as DAG files.

Layout written to --out (default dist/mwaa):
    dags/              DAG files + es_export/ + es_export_airflow/ + .airflowignore  -> s3://<bucket>/dags/
    plugins.zip        the repo's plugins/ folder + es_export/ + es_export_airflow/   -> s3://<bucket>/plugins.zip
    requirements.txt   the repo's requirements.txt (MWAA's constraint line + pins)    -> s3://<bucket>/requirements.txt
    startup.sh         optional startup script (non-secret env var defaults)         -> s3://<bucket>/startup.sh

Plain standard library on purpose: no Airflow import, no `zip` binary needed.
"""

from __future__ import annotations

import argparse
import shutil
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "dist" / "mwaa"
# The core packages, copied to the top of dags/ because MWAA puts the dags folder on sys.path.
PACKAGES = ("es_export", "es_export_airflow")
SKIP_NAMES = ("__pycache__", "*.pyc", "*.pyo")

# Airflow 3 reads .airflowignore with [core] dag_ignore_file_syntax, whose default is "glob" (gitignore-like);
# Airflow 2 defaulted to "regexp". Each pattern below ignores the package folders under both syntaxes:
# glob: "name/" matches the directory "name" at any depth, so the walk skips it;
# regexp: an un-anchored search in each path relative to dags/, so it matches every file "name/...".
AIRFLOWIGNORE = """\
# Helper packages, not DAG files: the DAG files import them (the dags folder is on sys.path).
# Each line works with both values of [core] dag_ignore_file_syntax (glob, Airflow 3's default, and regexp).
es_export/
es_export_airflow/
"""

STARTUP_SH = """\
#!/bin/sh
# Optional MWAA startup script. Upload it and set it as the environment's startup script only if you
# need to set env vars: the DAGs default every one of these themselves. Nothing secret belongs here;
# connections and the es_message_export_config Variable come from Airflow (or its secrets backend).
# PYTHONPATH is not needed: MWAA puts the dags folder (with es_export/ and es_export_airflow/) on sys.path.
export ES_EXPORT_MAX_ACTIVE_RUNS="${ES_EXPORT_MAX_ACTIVE_RUNS:-2}"      # concurrent es_message_export runs
export ES_RETRY_SCHEDULE="${ES_RETRY_SCHEDULE:-*/15 * * * *}"          # cron of es_message_retry
export ES_EXPORT_POKE_SECONDS="${ES_EXPORT_POKE_SECONDS:-30}"           # poke interval of the process sensors
export ES_EXPORT_DEADLINE_SECONDS="${ES_EXPORT_DEADLINE_SECONDS:-21600}"  # late-run alert after queueing
export ES_EXPORT_BATCH_POOL="${ES_EXPORT_BATCH_POOL:-es_export_batches}"  # pool of the process tasks: create it
# export ES_EXPORT_ALERT_SNS_TOPIC_ARN="arn:aws:sns:<region>:<account>:<topic>"  # where late-run alerts go
"""


def copy_dags(dags_out: Path) -> int:
    """DAG files, the core packages and .airflowignore into dags_out; returns the number of files written."""
    dags_out.mkdir(parents=True)
    for dag_file in sorted((ROOT / "dags").glob("*.py")):
        shutil.copy2(dag_file, dags_out / dag_file.name)
    for package in PACKAGES:
        shutil.copytree(ROOT / "include" / package, dags_out / package, ignore=shutil.ignore_patterns(*SKIP_NAMES))
    (dags_out / ".airflowignore").write_text(AIRFLOWIGNORE)
    return sum(1 for p in dags_out.rglob("*") if p.is_file())


def plugin_files(plugins_dir: Path) -> list[Path]:
    """Files of the plugins folder (none when it does not exist), without Python caches."""
    if not plugins_dir.is_dir():
        return []
    return sorted(p for p in plugins_dir.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo"))


def build_plugins_zip(plugins_dir: Path, zip_path: Path) -> int:
    """plugins_dir's contents and the core packages at the zip root (MWAA unzips it into its plugins
    folder); returns the file count.

    The packages travel here too because Airflow 3 puts only the plugins folder on sys.path in the
    scheduler, the api-server and the triggerer: the DAGs folder is on it only while DAG files are
    parsed, and the plugin (listener, status page) and the deadline callback import the packages.
    """
    files = [(path, path.relative_to(plugins_dir).as_posix()) for path in plugin_files(plugins_dir)]
    for package in PACKAGES:
        root = ROOT / "include"
        files += [(path, path.relative_to(root).as_posix()) for path in plugin_files(root / package)]
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path, name in files:
            zf.write(path, name)
    return len(files)


def write_startup_script(path: Path) -> None:
    path.write_text(STARTUP_SH)
    path.chmod(0o755)


def clear_previous(out: Path) -> None:
    """Remove only what an earlier build wrote, so a mistyped --out never deletes anything else."""
    shutil.rmtree(out / "dags", ignore_errors=True)
    for name in ("plugins.zip", "requirements.txt", "startup.sh"):
        (out / name).unlink(missing_ok=True)


def human_size(path: Path) -> str:
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    return f"{size / 1024:.1f} KB"


def build(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    clear_previous(out)
    dag_count = copy_dags(out / "dags")
    plugin_count = build_plugins_zip(ROOT / "plugins", out / "plugins.zip")
    shutil.copy2(ROOT / "requirements.txt", out / "requirements.txt")
    write_startup_script(out / "startup.sh")
    print(f"built {out}")
    print(f"  dags/             {dag_count} files, {human_size(out / 'dags')}")
    print(f"  plugins.zip       {plugin_count} files, {human_size(out / 'plugins.zip')}")
    print(f"  requirements.txt  {human_size(out / 'requirements.txt')}")
    print(f"  startup.sh        {human_size(out / 'startup.sh')} (optional)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    build(parser.parse_args().out.resolve())


if __name__ == "__main__":
    main()
