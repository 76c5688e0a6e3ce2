"""The IAM policies in deploy/ allow what the code does on S3 and, for SSE-KMS, on the key (and no more);
the SAM template is valid and gives the function an EXPORT_CONFIG its ExportConfig accepts."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from es_export.config import ExportConfig

pytestmark = pytest.mark.unit

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
# What sink and the pipeline call: put_object, get_object (reconcile reads documents, remove_documents
# rewrites NDJSON files), delete_object (superseded objects), list_objects_v2.
S3_ACTIONS = {"s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:ListBucket"}
# PutObject with SSE-KMS needs GenerateDataKey; reading an object back needs Decrypt.
KMS_ACTIONS = {"kms:GenerateDataKey", "kms:Decrypt"}


class CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags: `!Sub x` becomes {"Sub": x}."""


def _tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        return {suffix: loader.construct_scalar(node)}
    if isinstance(node, yaml.SequenceNode):
        return {suffix: loader.construct_sequence(node, deep=True)}
    return {suffix: loader.construct_mapping(node, deep=True)}


CfnLoader.add_multi_constructor("!", _tag)


@pytest.fixture(scope="module")
def template():
    return yaml.load((DEPLOY / "template.yaml").read_text(), Loader=CfnLoader)  # noqa: S506 - a SafeLoader


def actions(statement) -> set[str]:
    action = statement["Action"]
    return {action} if isinstance(action, str) else set(action)


def role_statements(template) -> list[dict]:
    """The statements of the function's role, as written (a condition is {"If": [name, statement, NoValue]})."""
    return template["Resources"]["ProcessorRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]


def function_statements(template) -> list[dict]:
    """The function's policy statements, with those under a condition (!If) taken out of it."""
    return [s["If"][1] if "If" in s else s for s in role_statements(template)]


def test_the_mwaa_role_may_do_what_the_export_does_and_use_only_the_kms_key():
    statements = json.loads((DEPLOY / "iam-policy-mwaa.json").read_text())["Statement"]
    assert S3_ACTIONS <= set().union(*(actions(s) for s in statements))
    (kms,) = [s for s in statements if actions(s) & KMS_ACTIONS]
    assert actions(kms) == KMS_ACTIONS
    assert re.fullmatch(r"arn:aws:kms:REGION:ACCOUNT_ID:key/KMS_KEY_ID", kms["Resource"])
    assert kms["Condition"] == {"StringEquals": {"kms:ViaService": "s3.REGION.amazonaws.com"}}


def test_the_function_may_do_what_a_batch_does_and_use_the_key_only_when_one_is_given(template):
    statements = function_statements(template)
    assert S3_ACTIONS <= set().union(*(actions(s) for s in statements))
    (kms,) = [s for s in statements if actions(s) & KMS_ACTIONS]
    assert actions(kms) == KMS_ACTIONS and kms["Resource"] == {"Ref": "KmsKeyArn"}
    conditional = {s["If"][0]: s["If"] for s in role_statements(template) if "If" in s}
    assert set(conditional) == {"HasKmsKey", "UsesSigV4", "HasEsSecret"}
    assert all(branches[2] == {"Ref": "AWS::NoValue"} for branches in conditional.values())
    # What the search client sends to an OpenSearch domain: GET, HEAD (index exists), POST; and DELETE only
    # to close a point-in-time (opensearch-py's delete_pit: DELETE /_search/point_in_time).
    opensearch = {s["If"][1]["Sid"]: s["If"][1] for s in role_statements(template)
                  if "If" in s and s["If"][0] == "UsesSigV4"}
    assert actions(opensearch["ReadOpenSearchDomain"]) == {"es:ESHttpGet", "es:ESHttpHead", "es:ESHttpPost"}
    assert actions(opensearch["ClosePointInTime"]) == {"es:ESHttpDelete"}
    assert opensearch["ClosePointInTime"]["Resource"] == {"Sub": "${OpenSearchDomainArn}/_search/point_in_time"}
    # The key only for this bucket's objects.
    assert [arn["Sub"] for arn in kms["Condition"]["StringLike"]["kms:EncryptionContext:aws:s3:arn"]] == [
        "arn:${AWS::Partition}:s3:::${ExportBucket}", "arn:${AWS::Partition}:s3:::${ExportBucket}/${ExportPrefix}/*"]
    variables = template["Resources"]["ProcessorFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["ES_AWS_REGION"]["If"][0] == "UsesSigV4"
    # The search cluster's login: read from its secret (that one ARN), never a plain variable.
    assert conditional["HasEsSecret"][1]["Action"] == "secretsmanager:GetSecretValue"
    assert conditional["HasEsSecret"][1]["Resource"] == {"Ref": "EsSecretArn"}
    assert variables["ES_SECRET_ARN"]["If"] == ["HasEsSecret", {"Ref": "EsSecretArn"}, {"Ref": "AWS::NoValue"}]
    assert not {"ES_PASSWORD", "ES_API_KEY", "ES_USERNAME", "MYSQL_PASSWORD"} & set(variables)


@pytest.mark.parametrize("key", [None, "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"])
def test_the_function_gets_an_export_config_it_accepts(template, key):
    text, variables = template["Resources"]["ProcessorFunction"]["Properties"]["Environment"]["Variables"][
        "EXPORT_CONFIG"]["Sub"]
    assert variables["SseKmsKeyId"]["If"][0] == "HasKmsKey"
    parameters = {name: spec.get("Default", f"x-{name.lower()}") for name, spec in template["Parameters"].items()}
    values = {**parameters, "SseKmsKeyId": json.dumps(key), "BucketAccount": "123456789012"}
    rendered = re.sub(r"\$\{(\w+)\}", lambda m: str(values[m.group(1)]), text)
    cfg = ExportConfig.from_mapping(json.loads(rendered))
    assert cfg.sse_kms_key_id == key and cfg.bucket == "x-exportbucket"
    assert cfg.expected_bucket_owner == "123456789012"
    assert variables["BucketAccount"]["If"] == ["HasBucketAccount", {"Ref": "ExportBucketAccount"},
                                                 {"Ref": "AWS::AccountId"}]


def test_every_s3_statement_holds_only_while_the_expected_account_owns_the_bucket(template):
    """S3 ARNs name no account: a bucket deleted and re-created elsewhere under the same name would still
    match. s3:ResourceAccount pins each statement to the owner (the template's ExportBucketAccount, or
    the policy's BUCKET_ACCOUNT_ID placeholder)."""
    mwaa = json.loads((DEPLOY / "iam-policy-mwaa.json").read_text())["Statement"]
    in_template = {"If": ["HasBucketAccount", {"Ref": "ExportBucketAccount"}, {"Ref": "AWS::AccountId"}]}
    for statements, owner in ((function_statements(template), in_template), (mwaa, "BUCKET_ACCOUNT_ID")):
        s3_statements = [st for st in statements if any(a.startswith("s3:") for a in actions(st))]
        assert len(s3_statements) == 2
        for st in s3_statements:
            assert st["Condition"]["StringEquals"]["s3:ResourceAccount"] == owner, st["Sid"]


def test_the_sam_template_passes_cfn_lint():
    out = subprocess.run([str(Path(sys.executable).parent / "cfn-lint"), str(DEPLOY / "template.yaml")],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


class SamLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags in their long form (`!Sub x` -> {"Fn::Sub": x}), as SAM reads it."""


def _long_tag(loader, suffix, node):
    if suffix == "GetAtt" and isinstance(node, yaml.ScalarNode):
        return {"Fn::GetAtt": loader.construct_scalar(node).split(".", 1)}
    value = (loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode) else
             loader.construct_sequence(node, deep=True) if isinstance(node, yaml.SequenceNode) else
             loader.construct_mapping(node, deep=True))
    return {"Ref": value} if suffix == "Ref" else {f"Fn::{suffix}": value}


SamLoader.add_multi_constructor("!", _long_tag)


class OfflinePolicies:
    """SAM's managed-policy lookup without IAM: the policies it attaches to roles it creates."""

    def load(self) -> dict[str, str]:
        return {name: f"arn:aws:iam::aws:policy/service-role/{name}" for name in
                ("AWSLambdaBasicExecutionRole", "AWSLambdaSQSQueueExecutionRole", "AWSLambdaVPCAccessExecutionRole")}


def test_the_rendered_role_may_receive_only_from_the_batches_queue_and_has_no_managed_policy(monkeypatch):
    """What AWS really creates: the template rendered as CloudFormation renders it (aws-sam-translator). For a
    role of its own, SAM attaches AWSLambdaSQSQueueExecutionRole, which may receive and delete messages on
    every queue of the account; the function's explicit role names the batches queue only."""
    from samtranslator.translator.transform import transform

    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")  # the stack's region, which SAM renders ARNs in
    source = yaml.load((DEPLOY / "template.yaml").read_text(), Loader=SamLoader)  # noqa: S506 - a SafeLoader
    source["Resources"]["ProcessorFunction"]["Properties"]["CodeUri"] = "s3://artifacts/lambda.zip"  # `sam deploy`'s
    parameters = {name: spec.get("Default", f"x-{name.lower()}") for name, spec in source["Parameters"].items()}
    rendered = transform(source, {**parameters, "SubnetIds": ["subnet-1"], "SecurityGroupIds": ["sg-1"]},
                         OfflinePolicies())
    resources = rendered["Resources"]
    roles = {name: r for name, r in resources.items() if r["Type"] == "AWS::IAM::Role"}
    assert set(roles) == {"ProcessorRole"}
    assert resources["ProcessorFunction"]["Properties"]["Role"] == {"Fn::GetAtt": ["ProcessorRole", "Arn"]}
    assert "ManagedPolicyArns" not in roles["ProcessorRole"]["Properties"]
    statements = [s["Fn::If"][1] if "Fn::If" in s else s for p in roles["ProcessorRole"]["Properties"]["Policies"]
                  for s in p["PolicyDocument"]["Statement"]]
    sqs = [s for s in statements if any(a.startswith("sqs:") for a in actions(s))]
    assert sqs and all(s["Resource"] == {"Fn::GetAtt": ["BatchesQueue", "Arn"]} for s in sqs)
    star = {a for s in statements if s.get("Resource") == "*" for a in actions(s)}
    assert star and all(a.startswith("ec2:") for a in star)  # only the VPC attachment, which EC2 grants on "*"
    mapping = next(r for r in resources.values() if r["Type"] == "AWS::Lambda::EventSourceMapping")
    assert mapping["Properties"]["EventSourceArn"] == {"Fn::GetAtt": ["BatchesQueue", "Arn"]}


def test_the_export_bucket_is_one_an_archive_can_trust():
    """deploy/bucket.yaml: no public access, objects owned by the bucket's account, SSE-KMS with a bucket key,
    versions kept after an overwrite or delete, plain HTTP and uploads without the export key refused."""
    bucket_template = yaml.load((DEPLOY / "bucket.yaml").read_text(), Loader=CfnLoader)  # noqa: S506 - a SafeLoader
    bucket = bucket_template["Resources"]["ExportBucket"]
    props = bucket["Properties"]
    assert set(props["PublicAccessBlockConfiguration"].values()) == {True} and len(
        props["PublicAccessBlockConfiguration"]) == 4
    assert props["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    (encryption,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms" and encryption["BucketKeyEnabled"]
    assert props["VersioningConfiguration"]["Status"] == "Enabled"
    assert props["LifecycleConfiguration"]["Rules"][0]["NoncurrentVersionExpiration"]["NoncurrentDays"] == {
        "Ref": "NoncurrentDays"}
    assert bucket["DeletionPolicy"] == "Retain"
    denies = {s["Sid"]: s for s in bucket_template["Resources"]["ExportBucketPolicy"]["Properties"]["PolicyDocument"][
        "Statement"] if s["Effect"] == "Deny"}
    assert denies["DenyPlainHttp"]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert denies["DenyUploadsWithoutTheExportKey"]["Condition"] == {"StringNotEqualsIfExists": {
        "s3:x-amz-server-side-encryption-aws-kms-key-id": {"Ref": "KmsKeyArn"}}}
    out = subprocess.run([str(Path(sys.executable).parent / "cfn-lint"), str(DEPLOY / "bucket.yaml")],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_package_roles_may_not_delete_versions_or_change_the_bucket(template):
    granted = set().union(*(actions(s) for s in function_statements(template)),
                          *(actions(s) for s in json.loads((DEPLOY / "iam-policy-mwaa.json").read_text())["Statement"]))
    assert not {a for a in granted if a in ("s3:DeleteObjectVersion", "s3:*") or a.startswith("s3:PutBucket")}


def test_the_batches_queue_is_encrypted_takes_messages_only_over_tls_and_its_dead_letters_alarm(template):
    resources = template["Resources"]
    for name in ("BatchesQueue", "BatchesDeadLetterQueue"):
        assert resources[name]["Properties"]["SqsManagedSseEnabled"] is True, name
    assert resources["BatchesDeadLetterQueue"]["Properties"]["RedriveAllowPolicy"]["redrivePermission"] == "byQueue"
    statements = resources["BatchesQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    plain = next(s for s in statements if s.get("Sid") == "DenyPlainHttp")
    assert plain["Effect"] == "Deny" and plain["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    (send,) = [s["If"][1] for s in statements if "If" in s]
    assert send["Effect"] == "Deny" and send["Action"] == "sqs:SendMessage"
    assert send["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": {"Ref": "MwaaExecutionRoleArn"}}}
    alarm = resources["DeadLetterAlarm"]["Properties"]
    assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible" and alarm["Threshold"] == 0
    assert alarm["Dimensions"][0]["Value"] == {"GetAtt": "BatchesDeadLetterQueue.QueueName"}


def test_the_lambda_package_installs_only_wheels_whose_hash_it_pins():
    lines = (DEPLOY / "lambda-requirements.txt").read_text().replace("\\\n", " ").splitlines()
    pins = [line for line in lines if "==" in line and not line.lstrip().startswith("#")]
    assert pins and all(re.search(r"--hash=sha256:[0-9a-f]{64}\b", line) for line in pins), pins
    assert "--require-hashes" in (DEPLOY / "build_lambda_zip.sh").read_text()
