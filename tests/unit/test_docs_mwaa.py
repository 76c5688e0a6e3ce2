"""The MWAA deploy steps in docs/deploy-mwaa.md match what `make mwaa-bundle` builds and do no harm.

What a reader copies from the guide: no `aws s3 sync --delete` (on a shared DAGs prefix it deletes other
teams' DAGs), every file deploy/build_mwaa_bundle.py writes is uploaded to its own key (startup.sh included),
the environment is pointed at plugins.zip, requirements.txt and startup.sh with their object versions, and the
MWAA section reaches Airflow through MWAA's tokens, not the local `/auth/token` login.
"""

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from support import ROOT

pytestmark = pytest.mark.unit

OPERATIONS = ROOT / "docs" / "operations.md"
DEPLOY_MWAA = ROOT / "docs" / "deploy-mwaa.md"
CONFIGURATION = ROOT / "docs" / "configuration.md"
DOCS = (OPERATIONS, DEPLOY_MWAA, ROOT / "docs" / "lambda.md", ROOT / "docs" / "development.md", ROOT / "README.md",
        CONFIGURATION, ROOT / "docs" / "architecture.md")
BUILDER = ROOT / "deploy" / "build_mwaa_bundle.py"
BUNDLE = "dist/mwaa/"
MWAA_HEADING = "## Deploying to Amazon MWAA: `make mwaa-bundle`"
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
S3_UPLOAD = re.compile(r"\baws s3 (cp|sync)\b")


def builder():
    spec = importlib.util.spec_from_file_location("build_mwaa_bundle", BUILDER)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def code_blocks(text: str) -> list[str]:
    return FENCE.findall(text)


def commands(block: str) -> list[list[str]]:
    """The block's command lines as words (continuation lines joined, comments dropped), split at ; and |."""
    joined = re.sub(r"\\\n", " ", block)
    result = []
    for line in joined.splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:  # not shell (JSON, SQL, output)
            continue
        current: list[str] = []
        for word in [*words, ";"]:
            if word in (";", "|", "||", "&&", "do", "then"):
                if current:
                    result.append(current)
                current = []
            else:
                current.append(word)
    return result


def mwaa_section() -> str:
    text = DEPLOY_MWAA.read_text()
    start = text.index(MWAA_HEADING)
    end = text.index("\n## ", start + len(MWAA_HEADING))
    return text[start:end]


def uploads() -> list[tuple[str, str, str]]:
    """(cp|sync, local source, destination) of every `aws s3 cp|sync` from dist/mwaa/ in the MWAA section."""
    found = []
    for block in code_blocks(mwaa_section()):
        for words in commands(block):
            if words[:2] == ["aws", "s3"] and words[2] in ("cp", "sync"):
                args = [w for w in words[3:] if not w.startswith("--")]
                if args and args[0].startswith(BUNDLE):
                    found.append((words[2], args[0], args[1]))
    return found


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mwaa")
    builder().build(out)
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_no_s3_sync_with_delete(doc: Path) -> None:
    text = doc.read_text()
    for block in code_blocks(text):
        for line in re.sub(r"\\\n", " ", block).splitlines():
            if S3_UPLOAD.search(line):
                assert "--delete" not in line, f"{doc.name}: {line.strip()}"
    for span in INLINE_CODE.findall(text):
        if "s3 sync" in span:
            assert "--delete" not in span, f"{doc.name}: `{span}`"


def test_every_bundle_file_is_uploaded_to_its_own_key(bundle: Path) -> None:
    built = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    covered: set[str] = set()
    for verb, source, destination in uploads():
        relative = source[len(BUNDLE):]
        assert destination == f"$B/{relative}", f"{source} goes to {destination}"
        # One copy of each file by name: a sync would replace a shared prefix, and the bundle has no folder to sync.
        assert verb == "cp", f"the guide syncs {source}"
        assert relative in built, f"the guide uploads {source}, which make mwaa-bundle does not write"
        covered.add(relative)
    assert built - covered == set(), "files make mwaa-bundle writes that the guide never uploads"


def test_the_offline_variant_is_documented_as_built() -> None:
    section = mwaa_section()
    assert "`dist/mwaa-offline/`" in section
    flags = builder().offline_requirements(ROOT / "requirements.txt", builder().MWAA_PLUGINS_FOLDER)
    for line in flags.splitlines():
        if line.startswith("--"):
            assert f"`{line}`" in section, f"the offline requirements.txt has {line}; the guide does not say so"


def test_startup_script_is_uploaded_and_set_with_its_version(bundle: Path) -> None:
    startup = bundle / "startup.sh"
    assert startup.read_text() == builder().STARTUP_SH and startup.stat().st_mode & 0o111
    assert ("cp", "dist/mwaa/startup.sh", "$B/startup.sh") in uploads()
    updates = [words for block in code_blocks(mwaa_section()) for words in commands(block)
               if words[:3] == ["aws", "mwaa", "update-environment"]]
    assert len(updates) == 1
    options = dict(zip(updates[0][3::2], updates[0][4::2], strict=False))
    for kind, key in (("startup-script", "startup.sh"), ("plugins", "plugins.zip"),
                      ("requirements", "requirements.txt")):
        assert options.get(f"--{kind}-s3-path") == key
        assert options.get(f"--{kind}-s3-object-version") == f"$(version {key})"
        assert ("cp", f"dist/mwaa/{key}", f"$B/{key}") in uploads()


def test_startup_script_settings_are_documented() -> None:
    exported = re.findall(r"^#?\s*export (\w+)=", builder().STARTUP_SH, re.MULTILINE)
    assert "ES_EXPORT_BATCH_POOL" in exported
    configuration = CONFIGURATION.read_text()
    for name in exported:
        assert f"`{name}`" in configuration, f"{name} (set in startup.sh) is not in configuration.md"


def test_mwaa_section_uses_mwaa_tokens_not_the_local_login() -> None:
    section = mwaa_section()
    for block in code_blocks(section):
        assert "/auth/token" not in block
    for needle in ("aws mwaa create-cli-token", "/aws_mwaa/cli", "aws mwaa invoke-rest-api",
                   "aws mwaa create-web-login-token", "not verified on MWAA"):
        assert needle in section, needle
