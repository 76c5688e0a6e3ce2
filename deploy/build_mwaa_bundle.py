"""Build dist/mwaa/ and dist/mwaa-offline/: exactly what to upload to an Amazon MWAA environment's S3 bucket.

One copy of the code: the packages `es_export` and `es_export_airflow` travel only in plugins.zip. MWAA unpacks
it into the plugins folder, which Airflow 3 puts on sys.path in every component (scheduler, DAG processor,
workers, triggerer, api-server); the DAGs folder is on it only while DAG files are parsed and tasks run, and
after the plugins folder. So dags/ holds only the three DAG files, and a change to the packages needs a new
plugins.zip and an environment update, exactly like the plugin.

Layout written to --out (default dist/mwaa):
    dags/              the three DAG files                                              -> s3://<bucket>/dags/
    plugins.zip        the repo's plugins/ folder + es_export/ + es_export_airflow/   -> s3://<bucket>/plugins.zip
    requirements.txt   the repo's requirements.txt (MWAA's constraint line + pins)    -> s3://<bucket>/requirements.txt
    startup.sh         optional startup script (non-secret env var defaults)         -> s3://<bucket>/startup.sh

and, for environments without internet access, the same under --offline-out (default dist/mwaa-offline) with
plugins.zip also holding wheels/ (every package requirements.txt needs that MWAA's image lacks, built for
--offline-python, default MWAA's 3.12 on manylinux x86_64) and constraints-3.12.txt, and a requirements.txt
that installs from them alone (--no-index, --find-links, --constraint into the plugins folder).

Plain standard library plus pip (to download the wheels) on purpose: no Airflow import, no `zip` binary needed.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from mwaa_packages import CONSTRAINTS, MWAA_PYTHON, mwaa_versions, preinstalled, read_pins, runtime_closure

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "dist" / "mwaa"
DEFAULT_OFFLINE_OUT = ROOT / "dist" / "mwaa-offline"
# The core packages; plugins.zip carries them at its root.
PACKAGES = ("es_export", "es_export_airflow")
SKIP_NAMES = ("__pycache__", "*.pyc", "*.pyo")
# Where MWAA unpacks plugins.zip (AIRFLOW_HOME is /usr/local/airflow in its image).
MWAA_PLUGINS_FOLDER = "/usr/local/airflow/plugins"
# Platforms of the offline wheels: MWAA's image is Amazon Linux 2023 (glibc 2.34) on x86_64.
MWAA_PLATFORMS = ("manylinux_2_34_x86_64", "manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
# Packages PyPI has only as source for Linux: the offline bundle carries the sdist, which MWAA's image builds
# (it has gcc, pkg-config and MariaDB's client headers), and the wheels of its build requirements.
SOURCE_ONLY = {"mysqlclient": ("setuptools",)}

STARTUP_SH = """\
#!/bin/sh
# Optional MWAA startup script. Upload it and set it as the environment's startup script only if you
# need to set env vars: the DAGs default every one of these themselves. Nothing secret belongs here;
# connections and the es_message_export_config Variable come from Airflow (or its secrets backend).
# PYTHONPATH is not needed (and MWAA refuses to change it): the packages come from plugins.zip.
export ES_EXPORT_MAX_ACTIVE_RUNS="${ES_EXPORT_MAX_ACTIVE_RUNS:-2}"      # concurrent es_message_export runs
export ES_RETRY_SCHEDULE="${ES_RETRY_SCHEDULE:-*/15 * * * *}"          # cron of es_message_retry
export ES_REFRESH_SCHEDULE="${ES_REFRESH_SCHEDULE:-0 * * * *}"         # cron of es_message_refresh ("off": by hand)
export ES_EXPORT_POKE_SECONDS="${ES_EXPORT_POKE_SECONDS:-30}"           # poke interval of the process sensors
export ES_EXPORT_DEADLINE_SECONDS="${ES_EXPORT_DEADLINE_SECONDS:-21600}"  # late-run alert after queueing
export ES_EXPORT_BATCH_POOL="${ES_EXPORT_BATCH_POOL:-es_export_batches}"  # pool of the process tasks: create it
# export ES_EXPORT_ALERT_SNS_TOPIC_ARN="arn:aws:sns:<region>:<account>:<topic>"  # where late-run alerts go
"""


def copy_dags(dags_out: Path) -> int:
    """The DAG files into dags_out; returns the number of files written."""
    dags_out.mkdir(parents=True)
    for dag_file in sorted((ROOT / "dags").glob("*.py")):
        shutil.copy2(dag_file, dags_out / dag_file.name)
    return sum(1 for p in dags_out.rglob("*") if p.is_file())


def plugin_files(plugins_dir: Path) -> list[Path]:
    """Files of the plugins folder (none when it does not exist), without Python caches."""
    if not plugins_dir.is_dir():
        return []
    return sorted(p for p in plugins_dir.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo"))


def build_plugins_zip(plugins_dir: Path, zip_path: Path, extra: list[tuple[Path, str]] = ()) -> int:
    """plugins_dir's contents, the core packages and `extra` (path, name in the zip) at the zip root (MWAA
    unzips it into its plugins folder); returns the file count."""
    files = [(path, path.relative_to(plugins_dir).as_posix()) for path in plugin_files(plugins_dir)]
    for package in PACKAGES:
        root = ROOT / "include"
        files += [(path, path.relative_to(root).as_posix()) for path in plugin_files(root / package)]
    files += list(extra)
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path, name in files:
            zf.write(path, name)
    return len(files)


def offline_packages(requirements_file: Path) -> dict[str, str]:
    """name -> MWAA's version of every package requirements_file needs that MWAA's image does not have."""
    versions = mwaa_versions()
    needed = runtime_closure(tuple(read_pins(requirements_file))) - preinstalled()
    for name in list(needed):
        needed |= set(SOURCE_ONLY.get(name, ()))
    missing = sorted(name for name in needed if name not in versions)
    if missing:
        raise SystemExit(f"MWAA's constraint file pins no version of {', '.join(missing)}: pin it in requirements.txt")
    return {name: versions[name] for name in sorted(needed)}


def download(packages: dict[str, str], dest: Path, python: str) -> None:
    """Wheels (sources for SOURCE_ONLY) of exactly these versions into dest, without their dependencies
    (the caller lists them all). python is MWAA's "3.12" (manylinux x86_64) or "current" (this interpreter)."""
    dest.mkdir(parents=True)
    target = [] if python == "current" else [
        "--python-version", python, "--implementation", "cp", "--abi", "cp" + python.replace(".", ""),
        *(arg for platform in MWAA_PLATFORMS for arg in ("--platform", platform))]
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(dest)]
    binaries = [f"{name}=={version}" for name, version in packages.items() if name not in SOURCE_ONLY]
    sources = [f"{name}=={version}" for name, version in packages.items() if name in SOURCE_ONLY]
    subprocess.run([*pip, "--only-binary=:all:", *target, *binaries], check=True)
    if sources:
        subprocess.run([*pip, "--no-binary=:all:", *sources], check=True)


def offline_requirements(requirements_file: Path, plugins_folder: str) -> str:
    """requirements_file's pins, installed from the plugins folder alone."""
    pins = [line for line in requirements_file.read_text().splitlines()
            if line.strip() and not line.startswith(("#", "-"))]
    return "\n".join([
        "# What Amazon MWAA installs for these DAGs without internet access (Airflow 3.3.1, Python 3.12):",
        "# the wheels and MWAA's constraint file travel in plugins.zip, which MWAA unpacks before installing.",
        "--no-index",
        f"--find-links {plugins_folder}/wheels",
        f"--constraint {plugins_folder}/constraints-3.12.txt",
        *pins, ""])


def write_startup_script(path: Path) -> None:
    path.write_text(STARTUP_SH)
    path.chmod(0o755)


def clear_previous(out: Path) -> None:
    """Remove only what an earlier build wrote, so a mistyped --out never deletes anything else."""
    shutil.rmtree(out / "dags", ignore_errors=True)
    shutil.rmtree(out / "wheels", ignore_errors=True)
    for name in ("plugins.zip", "requirements.txt", "startup.sh"):
        (out / name).unlink(missing_ok=True)


def human_size(path: Path) -> str:
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    return f"{size / 1024:.1f} KB"


def ca_bundle_entry(rds_ca_bundle: Path | None) -> list[tuple[Path, str]]:
    """RDS's CA bundle as plugins.zip's rds-ca-bundle.pem, which the `mysql_tracking` connection's `ssl` extra
    names (/usr/local/airflow/plugins/rds-ca-bundle.pem): MWAA's workers have no RDS bundle of their own."""
    if rds_ca_bundle is None:
        return []
    if not rds_ca_bundle.is_file() or b"BEGIN CERTIFICATE" not in rds_ca_bundle.read_bytes():
        raise SystemExit(f"RDS_CA_BUNDLE={rds_ca_bundle} is not a PEM bundle: download "
                         "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem and name that file")
    return [(rds_ca_bundle, "rds-ca-bundle.pem")]


def build(out: Path, *, offline: bool = False, python: str = MWAA_PYTHON, rds_ca_bundle: Path | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    clear_previous(out)
    dag_count = copy_dags(out / "dags")
    requirements = ROOT / "requirements.txt"
    extra = ca_bundle_entry(rds_ca_bundle)
    if offline:
        download(offline_packages(requirements), out / "wheels", python)
        wheels = [(wheel, f"wheels/{wheel.name}") for wheel in sorted((out / "wheels").iterdir())]
        extra += [*wheels, (CONSTRAINTS, "constraints-3.12.txt")]
        (out / "requirements.txt").write_text(offline_requirements(requirements, MWAA_PLUGINS_FOLDER))
    else:
        shutil.copy2(requirements, out / "requirements.txt")
    plugin_count = build_plugins_zip(ROOT / "plugins", out / "plugins.zip", extra)
    shutil.rmtree(out / "wheels", ignore_errors=True)
    write_startup_script(out / "startup.sh")
    wheel_count = sum(name.startswith("wheels/") for _, name in extra)
    print(f"built {out}" + (f" (offline: {wheel_count} wheels/sources for Python {python})" if offline else ""))
    print(f"  dags/             {dag_count} files, {human_size(out / 'dags')}")
    print(f"  plugins.zip       {plugin_count} files, {human_size(out / 'plugins.zip')}")
    print(f"  requirements.txt  {human_size(out / 'requirements.txt')}")
    print(f"  startup.sh        {human_size(out / 'startup.sh')} (optional)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--offline-out", type=Path, default=None,
                        help=f"also build the offline variant there (make mwaa-bundle: {DEFAULT_OFFLINE_OUT})")
    parser.add_argument("--offline-python", default=MWAA_PYTHON,
                        help="Python of the offline wheels: 3.12 (MWAA, manylinux x86_64) or 'current'")
    parser.add_argument("--rds-ca-bundle", type=Path, default=None,
                        help="RDS's CA bundle (global-bundle.pem), packaged as plugins.zip's rds-ca-bundle.pem")
    args = parser.parse_args()
    build(args.out.resolve(), rds_ca_bundle=args.rds_ca_bundle)
    if args.offline_out:
        build(args.offline_out.resolve(), offline=True, python=args.offline_python, rds_ca_bundle=args.rds_ca_bundle)


if __name__ == "__main__":
    main()
