"""Everything docker-compose.yaml names exists: in the repository, in the MWAA bundle, in Airflow 3.3.1 or in
the image that uses it.

Docker cannot run where the tests run, so this and test_compose.py (the compose spec) are the file's only
checks: a path that is not there, an Airflow command or option that does not exist, a connection id or an
environment variable no code reads would otherwise show up only on a user's machine. `problems()` lists
what is wrong in a compose file; the tests run it on docker-compose.yaml and on broken snippets.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import shlex
import zipfile
from functools import cache
from pathlib import Path, PurePosixPath

import pytest
import yaml

from support import ROOT, build_mwaa_bundle

pytestmark = pytest.mark.unit

COMPOSE = ROOT / "docker-compose.yaml"
BUNDLE_PREFIX = "dist/mwaa/"  # host paths under it are what `make mwaa-bundle` writes
PLUGINS_VOLUME = "mwaa-plugins"  # the named volume that holds plugins.zip unzipped
CODE_DIRS = ("include", "dags", "plugins")

# Paths inside the images that no mount provides. No Docker here to look, so each says where it is documented.
IMAGE_PATHS = {
    "/entrypoint": "apache/airflow: its Dockerfile copies scripts/docker/entrypoint_prod.sh there",
    "/usr/bin/dumb-init": 'apache/airflow: ENTRYPOINT ["/usr/bin/dumb-init", "--", "/entrypoint"]',
    "/bin/bash": "apache/airflow: Debian bookworm; the entrypoint is a bash script",
}
# Environment variables an image (or a library in it) reads, by image repository. Not this package's.
IMAGE_ENV = {
    "postgres": {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"},
    "mysql": {"MYSQL_DATABASE", "MYSQL_USER", "MYSQL_PASSWORD", "MYSQL_RANDOM_ROOT_PASSWORD"},
    # Elasticsearch settings (any name with a dot) and the JVM options of its image.
    "docker.elastic.co/elasticsearch/elasticsearch": {"discovery.type", "xpack.security.enabled", "ES_JAVA_OPTS"},
    # boto3, for devstack/aws_resources.py in the init service.
    "apache/airflow": {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"},
}
# The programs each image runs here (shell builtins included), as its documentation and Dockerfile show them.
IMAGE_PROGRAMS = {
    "apache/airflow": {"airflow", "bash", "python", "pip", "find", "ls", "curl", "exec", "unset", ".",
                       "/bin/bash", "/usr/bin/dumb-init"},
    "postgres": {"pg_isready"},
    "mysql": {"mysqladmin"},
    "docker.elastic.co/elasticsearch/elasticsearch": {"curl"},
    "motoserver/moto": {"python"},
}
AIRFLOW_REPOSITORY = "apache/airflow"
PACKAGE_ENV = re.compile(r"^ES_(EXPORT_)?[A-Z0-9_]+$")
ABSOLUTE_PATH = re.compile(r"(?<![\w:/.$-])/[\w.\-/]+")
INTERPOLATION = re.compile(r"(?<!\$)\$\{(\w+)(?::?[-?+]([^}]*))?\}")


# ---------------------------------------------------------------- reading the file


def load(text: str) -> dict:
    return yaml.safe_load(text)


def interpolate(value: str) -> str:
    """A value as compose passes it on with no variable set: ${VAR:-default} -> default, $$ -> $."""
    return INTERPOLATION.sub(lambda m: m.group(2) or "", value).replace("$$", "$")


def repository(image: str) -> str:
    return image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image


def as_list(value) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def texts(service: dict) -> list[str]:
    """Every string a service runs (entrypoint, command, healthcheck), un-escaped: where paths are looked for."""
    found = as_list(service.get("entrypoint")) + as_list(service.get("command"))
    found += as_list((service.get("healthcheck") or {}).get("test"))
    return [interpolate(t) for t in found]


def commands(service: dict) -> list[list[str]]:
    """Every command a service runs, as words: its argv, its healthcheck and each command of the shell scripts
    they hand to `bash -c`."""
    argv = [interpolate(w) for w in as_list(service.get("entrypoint")) + as_list(service.get("command"))]
    found = [argv] if argv else []
    test = [interpolate(t) for t in as_list((service.get("healthcheck") or {}).get("test"))]
    if test[:1] == ["CMD"]:
        found.append(test[1:])
    elif test[:1] == ["CMD-SHELL"]:
        found += shell_commands(test[1])
    for words in list(found):
        for i, word in enumerate(words[:-1]):
            if PurePosixPath(word).name in ("bash", "sh") and re.fullmatch(r"-[a-z]*c[a-z]*", words[i + 1]):
                if i + 2 < len(words):
                    found += shell_commands(words[i + 2])
                break
    return found


def mounts(service: dict) -> list[dict]:
    """The service's volumes in long syntax: type, source, target."""
    result = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            source, _, rest = volume.partition(":")
            target = rest.split(":")[0]
            kind = "bind" if source.startswith((".", "/", "~")) else "volume"
            result.append({"type": kind, "source": source, "target": target})
        else:
            result.append(volume)
    return result


def shell_commands(text: str) -> list[list[str]]:
    """The simple commands of a shell text, as words (comments dropped; `&&`, `||`, `;` and `|` split)."""
    commands = []
    for line in text.replace("\\\n", " ").splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line)
        for part in re.split(r"&&|\|\||;|\|", line):
            try:
                words = shlex.split(part)
            except ValueError:
                continue
            if words:
                commands.append(words)
    return commands


def airflow_commands(service: dict) -> list[list[str]]:
    """Every `airflow ...` the service runs, as argument lists (without `airflow`)."""
    found = [words[1:] for words in commands(service) if words and words[0] == "airflow"]
    # The Airflow image's /entrypoint runs its arguments as `airflow <args>` unless they start with bash or
    # python: so does a service that keeps that entrypoint or ends its own with `exec /entrypoint "$@"`.
    entrypoint = " ".join(as_list(service.get("entrypoint")))
    command = [interpolate(w) for w in as_list(service.get("command"))]
    if len(command) == 1:
        command = shlex.split(command[0])
    hands_over = not entrypoint or 'exec /entrypoint "$$@"' in entrypoint
    if repository(service.get("image", "")) == AIRFLOW_REPOSITORY and hands_over and command:
        if command[0] not in ("bash", "python", "airflow"):
            found.append(command)
    return found


# ---------------------------------------------------------------- what exists


@cache
def airflow_parser() -> argparse.ArgumentParser:
    from airflow.cli import cli_parser

    return cli_parser.get_parser()


def airflow_cli_problem(args: list[str]) -> str | None:
    """None when Airflow 3.3.1's CLI accepts these arguments, else its error message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            airflow_parser().parse_args(args)
    except SystemExit:
        return err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else "rejected"
    return None


@cache
def airflow_options() -> dict[str, set[str]]:
    from airflow.configuration import conf

    return {section: set(spec["options"]) for section, spec in conf.configuration_description.items()}


@cache
def code_strings() -> str:
    return "\n".join(p.read_text() for d in CODE_DIRS for p in (ROOT / d).rglob("*.py"))


def read_by_code(name: str) -> bool:
    return re.search(rf"""["']{re.escape(name)}["']""", code_strings()) is not None


def connection_ids() -> set[str]:
    from es_export_airflow import connections

    return {connections.ES_CONN_ID, connections.MYSQL_CONN_ID, connections.AWS_CONN_ID}


def host_path(source: str, bundle: Path) -> Path:
    """Where a host path of the compose file is: in the built bundle when `make mwaa-bundle` writes it."""
    relative = PurePosixPath(source.removeprefix("./"))
    if relative.as_posix().startswith(BUNDLE_PREFIX):
        return bundle / relative.relative_to(BUNDLE_PREFIX.rstrip("/"))
    return ROOT / relative


def plugins_zip_names(bundle: Path) -> set[str]:
    """Every file and folder plugins.zip unzips to, relative to the plugins folder."""
    with zipfile.ZipFile(bundle / "plugins.zip") as zf:
        names = {n.rstrip("/") for n in zf.namelist()}
    return names | {str(PurePosixPath(n).parent) for n in names} - {"."}


def container_path_problem(path: str, service: dict, bundle: Path) -> str | None:
    """None when a path inside the container comes from a mount (and is there) or from the image."""
    path = path.rstrip("/") or "/"
    candidates = [m for m in mounts(service) if path == m["target"] or path.startswith(m["target"].rstrip("/") + "/")]
    if not candidates:
        return None if path in IMAGE_PATHS else f"{path}: no volume mounts it and the image does not have it"
    mount = max(candidates, key=lambda m: len(m["target"]))
    rest = path[len(mount["target"]):].lstrip("/")
    if mount["type"] == "bind":
        shown = f"{mount['source']}/{rest}" if rest else mount["source"]
        return None if (host_path(mount["source"], bundle) / rest).exists() else f"{path}: {shown} does not exist"
    if mount["source"] == PLUGINS_VOLUME and rest and rest not in plugins_zip_names(bundle):
        return f"{path}: plugins.zip has no {rest}"
    return None


# ---------------------------------------------------------------- the checker


def problems(compose: dict, bundle: Path) -> list[str]:
    """Everything the compose file names that does not exist, one line each (empty: all good)."""
    found: list[str] = []
    services = compose.get("services") or {}
    declared_volumes = set(compose.get("volumes") or {})
    for name, service in services.items():
        image = service.get("image", "")
        repo = repository(image)
        tag = image[len(repo) + 1:] if image != repo else ""
        if not tag or tag == "latest" or not re.search(r"\d", tag):
            found.append(f"{name}: image {image!r} is not pinned to a version")
        depends = service.get("depends_on") or {}
        for other in depends if isinstance(depends, list) else list(depends):
            if other not in services:
                found.append(f"{name}: depends_on names {other!r}, which is not a service")
        for mount in mounts(service):
            if mount["type"] == "bind":
                if not host_path(mount["source"], bundle).exists():
                    made_by = " (`make mwaa-bundle` does not write it)" if BUNDLE_PREFIX in mount["source"] else ""
                    found.append(f"{name}: mounts {mount['source']}, which does not exist{made_by}")
            elif mount["source"] not in declared_volumes:
                found.append(f"{name}: mounts the volume {mount['source']!r}, which the file does not declare")
        for text in texts(service):
            for path in ABSOLUTE_PATH.findall(text):
                if problem := container_path_problem(path, service, bundle):
                    found.append(f"{name}: {problem}")
        programs = IMAGE_PROGRAMS.get(repo, set())
        for words in commands(service):
            if words and words[0] not in programs:
                found.append(f"{name}: runs {words[0]!r}, which {repo} is not known to have "
                             f"(known: {sorted(programs)})")
        for args in airflow_commands(service):
            if problem := airflow_cli_problem(args):
                found.append(f"{name}: `airflow {' '.join(args)}` is not an Airflow 3.3.1 command: {problem}")
        environment = service.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.partition("=")[::2] for item in environment)
        for key, raw in environment.items():
            value = interpolate(str(raw))
            if problem := env_problem(key, value, repo):
                found.append(f"{name}: {problem}")
            if value.startswith("/") and (problem := container_path_problem(value, service, bundle)):
                found.append(f"{name}: {key}={problem}")
    return found


def env_problem(key: str, value: str, repo: str) -> str | None:
    if repo != AIRFLOW_REPOSITORY:
        known = IMAGE_ENV.get(repo, set())
        return None if key in known else f"{key}: {repo} reads no such variable (known: {sorted(known)})"
    if match := re.fullmatch(r"AIRFLOW__([A-Z0-9_]+?)__([A-Z0-9_]+)", key):
        section, option = match.group(1).lower(), match.group(2).lower()
        options = airflow_options().get(section, set())
        if option not in options:  # sensitive options also come from OPTION_CMD and OPTION_SECRET
            option = re.sub(r"_(cmd|secret)$", "", option)
        if option not in options:
            return f"{key}: Airflow 3.3.1 has no option [{section}] {option}"
        return None
    if key.startswith("AIRFLOW_CONN_"):
        conn_id = key.removeprefix("AIRFLOW_CONN_").lower()
        if conn_id not in connection_ids():
            return f"{key}: the code uses no connection {conn_id!r} (it uses {sorted(connection_ids())})"
        try:
            json.loads(value)
        except ValueError as exc:
            return f"{key}: not JSON ({exc})"
        return None
    if key.startswith("AIRFLOW_VAR_"):
        from es_export.config import ExportConfig
        from es_export.errors import ConfigError
        from es_export_airflow.settings import CONFIG_VARIABLE

        name = key.removeprefix("AIRFLOW_VAR_").lower()
        if name != CONFIG_VARIABLE:
            return f"{key}: the code reads no Variable {name!r} (it reads {CONFIG_VARIABLE!r})"
        try:
            ExportConfig.from_mapping(json.loads(value))
        except (ValueError, ConfigError) as exc:
            return f"{key}: {exc}"
        return None
    if PACKAGE_ENV.match(key):
        return None if read_by_code(key) else f"{key}: nothing in {', '.join(CODE_DIRS)} reads it"
    if key in IMAGE_ENV[AIRFLOW_REPOSITORY]:
        return None
    return f"{key}: neither Airflow, the package nor the image reads it"


# ---------------------------------------------------------------- fixtures and tests


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """What `make mwaa-bundle` writes to dist/mwaa/, built fresh."""
    return build_mwaa_bundle(tmp_path_factory.mktemp("compose_bundle") / "mwaa")


@pytest.fixture(scope="module")
def compose() -> dict:
    return load(COMPOSE.read_text())


def test_every_name_in_docker_compose_exists(compose, bundle):
    assert problems(compose, bundle) == []


def airflow_service(body: str) -> str:
    """A compose file with one service `a` on the Airflow image; body: its further keys, 4 spaces in."""
    return "services:\n  a:\n    image: apache/airflow:3.3.1-python3.12\n" + body


SNIPPETS = [
    pytest.param("services:\n  a:\n    image: mysql:8.4\n    volumes: ['./nope:/x']\n",
                 "a: mounts ./nope, which does not exist", id="host-path"),
    pytest.param("services:\n  a:\n    image: mysql:8.4\n    volumes: ['./dist/mwaa/nope.zip:/x']\n",
                 "a: mounts ./dist/mwaa/nope.zip, which does not exist (`make mwaa-bundle` does not write it)",
                 id="bundle-path"),
    pytest.param(airflow_service("    volumes: ['./devstack:/opt/devstack']\n"
                                 "    command: [bash, -c, python /opt/devstack/nope.py]\n"),
                 "a: /opt/devstack/nope.py: ./devstack/nope.py does not exist", id="file-in-command"),
    pytest.param(airflow_service("    command: [bash, -c, /opt/run.sh]\n"),
                 "a: /opt/run.sh: no volume mounts it and the image does not have it", id="path-not-in-image"),
    pytest.param(airflow_service("    volumes: [{type: volume, source: mwaa-plugins, target: /p}]\n"
                                 "    command: [bash, -c, cat /p/nope.txt]\nvolumes:\n  mwaa-plugins:\n"),
                 "a: /p/nope.txt: plugins.zip has no nope.txt", id="plugins-zip"),
    pytest.param(airflow_service("    environment:\n      AIRFLOW__CORE__NOPE: x\n"),
                 "a: AIRFLOW__CORE__NOPE: Airflow 3.3.1 has no option [core] nope", id="airflow-option"),
    pytest.param(airflow_service("    command: [bash, -c, airflow pools nope]\n"),
                 "a: `airflow pools nope` is not an Airflow 3.3.1 command", id="airflow-subcommand"),
    pytest.param(airflow_service("    command: webserver\n"),
                 "a: `airflow webserver` is not an Airflow 3.3.1 command", id="airflow-2-command"),
    pytest.param(airflow_service("    command: [bash, -c, airflow pools set p eight d]\n"),
                 "a: `airflow pools set p eight d` is not an Airflow 3.3.1 command", id="airflow-arguments"),
    pytest.param(airflow_service("    command: [bash, -c, pyhton -V]\n"),
                 "a: runs 'pyhton', which apache/airflow is not known to have", id="program"),
    pytest.param("services:\n  a:\n    image: mysql:8.4\n    depends_on: [b]\n",
                 "a: depends_on names 'b', which is not a service", id="depends-on"),
    pytest.param(airflow_service("    environment:\n      AIRFLOW_CONN_NOPE: '{}'\n"),
                 "a: AIRFLOW_CONN_NOPE: the code uses no connection 'nope'", id="connection"),
    pytest.param(airflow_service("    environment:\n"
                                 "      AIRFLOW_VAR_ES_MESSAGE_EXPORT_CONFIG: '{\"bukket\": \"b\"}'\n"),
                 "a: AIRFLOW_VAR_ES_MESSAGE_EXPORT_CONFIG: unknown configuration key(s) ['bukket']",
                 id="variable-key"),
    pytest.param(airflow_service("    environment:\n      ES_EXPORT_NOPE: '1'\n"),
                 "a: ES_EXPORT_NOPE: nothing in include, dags, plugins reads it", id="package-env"),
    pytest.param(airflow_service("    environment:\n      PYTHONPATH: /x\n"),
                 "a: PYTHONPATH: neither Airflow, the package nor the image reads it", id="other-env"),
    pytest.param("services:\n  a:\n    image: mysql:8.4\n    environment:\n      MYSQL_NOPE: x\n",
                 "a: MYSQL_NOPE: mysql reads no such variable", id="image-env"),
    pytest.param("services:\n  a:\n    image: moto:latest\n", "a: image 'moto:latest' is not pinned", id="latest"),
    pytest.param("services:\n  a:\n    image: postgres\n", "a: image 'postgres' is not pinned", id="untagged"),
]


@pytest.mark.parametrize(("snippet", "expected"), SNIPPETS)
def test_the_checker_flags_a_made_up_name(snippet, expected, bundle):
    found = problems(load(snippet), bundle)
    assert any(p.startswith(expected) for p in found), found


def test_the_checker_sees_what_docker_compose_runs(compose):
    # Guards the checker itself: were it to find no command or no path, the test above would pass vacuously.
    services = compose["services"]
    run = {name: airflow_commands(s) for name, s in services.items()}
    assert run["airflow-scheduler"] == [["scheduler"]]
    assert run["airflow-apiserver"] == [["api-server"]]
    assert run["airflow-dag-processor"] == [["jobs", "check", "--job-type", "DagProcessorJob", "--hostname",
                                             "${HOSTNAME}"], ["dag-processor"]]
    assert ["triggerer"] in run["airflow-triggerer"]
    assert ["db", "migrate"] in run["airflow-init"]
    assert not any(run[name] for name in ("postgres", "mysql", "elasticsearch", "moto", "mwaa-plugins"))
    paths = {p for s in services.values() for t in texts(s) for p in ABSOLUTE_PATH.findall(t)}
    assert {"/opt/devstack/seed_data.py", "/opt/devstack/aws_resources.py", "/entrypoint",
            "/usr/local/airflow/requirements/mwaa-3.3.1-constraints-3.12.txt"} <= paths


def test_the_bundle_is_what_the_airflow_services_run(compose):
    """Dags and plugins from dist/mwaa/, at MWAA's paths; the repository's code never on sys.path."""
    components = ["airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"]
    for name in components:
        service = compose["services"][name]
        env = service["environment"]
        by_target = {m["target"]: m for m in mounts(service)}
        assert by_target[env["AIRFLOW__CORE__DAGS_FOLDER"]]["source"] == "./dist/mwaa/dags"
        assert by_target[env["AIRFLOW__CORE__PLUGINS_FOLDER"]]["source"] == PLUGINS_VOLUME
        assert "PYTHONPATH" not in env
        assert not any(m["source"].startswith(("./include", "./dags", "./plugins", ".:")) or m["source"] == "."
                       for m in mounts(service))
    # The plugins volume is plugins.zip unzipped (the only service that writes it).
    writers = [s for s in compose["services"].values()
               if any(m["source"] == PLUGINS_VOLUME and not m.get("read_only") for m in mounts(s))]
    assert len(writers) == 1
    zip_target = next(m["target"] for m in mounts(writers[0]) if m["source"] == "./dist/mwaa/plugins.zip")
    unzip = [w for w in commands(writers[0]) if w[:3] == ["python", "-m", "zipfile"]]
    assert unzip == [["python", "-m", "zipfile", "-e", zip_target, "/usr/local/airflow/plugins"]]


def test_local_paths_in_the_bundle_requirements_resolve_in_the_containers(compose, bundle):
    # requirements.txt may name a constraint file by path (MWAA: /usr/local/airflow/plugins/...): the
    # containers that pip-install it must have that file at that path.
    service = compose["services"]["airflow-scheduler"]
    for line in (bundle / "requirements.txt").read_text().splitlines():
        words = shlex.split(line, comments=True)
        for flag, value in zip(words, words[1:], strict=False):
            if flag in ("-c", "--constraint", "-r", "--requirement") and value.startswith("/"):
                assert container_path_problem(value, service, bundle) is None, line


def test_init_creates_what_the_dags_use(compose):
    from es_export.config import ExportConfig
    from es_export_airflow.settings import BATCH_POOL, BATCH_POOL_SLOTS

    init = compose["services"]["airflow-init"]
    run = commands(init)
    pool = next(w for w in run if w[:3] == ["airflow", "pools", "set"])
    assert pool[3:5] == [BATCH_POOL, str(BATCH_POOL_SLOTS)]
    aws = next(w for w in run if w[:2] == ["python", "/opt/devstack/aws_resources.py"])
    options = dict(zip(aws[2::2], aws[3::2], strict=True))
    cfg = ExportConfig.from_mapping(json.loads(init["environment"]["AIRFLOW_VAR_ES_MESSAGE_EXPORT_CONFIG"]))
    assert options["--bucket"] == cfg.bucket
    assert options["--queue"] == cfg.sqs_queue_name
    assert init["environment"]["ES_EXPORT_ALERT_SNS_TOPIC_ARN"].endswith(":" + options["--topic"])


def read_pin(path: Path, pattern: str) -> str:
    match = re.search(pattern, path.read_text(), re.MULTILINE)
    assert match, f"{pattern} not found in {path}"
    return match.group(1)


def test_images_run_the_versions_the_tests_run(compose):
    images = {repository(s["image"]): s["image"].rsplit(":", 1)[1] for s in compose["services"].values()}
    airflow = read_pin(ROOT / "requirements" / "dev.lock", r"^apache-airflow==(\S+)$")
    assert images[AIRFLOW_REPOSITORY] == f"{airflow}-python3.12"  # MWAA 3.3.1 runs Python 3.12
    assert images["docker.elastic.co/elasticsearch/elasticsearch"] == read_pin(
        ROOT / "devstack" / "es_node" / "pom.xml", r"<elasticsearch.version>(.+)</elasticsearch.version>")
    assert images["motoserver/moto"] == read_pin(ROOT / "requirements" / "dev.lock", r"^moto==(\S+)$")


def test_every_setting_of_the_file_is_documented_at_its_top():
    text = COMPOSE.read_text()
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    settings = {m.group(1) for m in INTERPOLATION.finditer(text)}
    assert settings, "no ${VAR} found: the pattern is broken"
    assert sorted(s for s in settings if s not in header) == []
