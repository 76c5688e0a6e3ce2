"""The processing Lambda's credentials: the search cluster's login from Secrets Manager (ES_SECRET_ARN), as the
MySQL password comes (MYSQL_SECRET_ARN), never from plain variables once a secret is set; a login over plain
http only when the network is declared trusted. Secrets Manager is the local S3/SQS server's (moto)."""

import json
import os
import uuid

import boto3
import pytest

import support
from es_export.errors import ConfigError
from es_export_lambda import handler

pytestmark = pytest.mark.integration


@pytest.fixture()
def secrets(monkeypatch):
    client = boto3.client("secretsmanager", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    handler._secret.cache_clear()
    handler._elasticsearch.cache_clear()
    made = []

    def secret(value: dict) -> str:
        arn = client.create_secret(Name=f"es-export-{uuid.uuid4().hex[:8]}", SecretString=json.dumps(value))["ARN"]
        made.append(arn)
        return arn

    yield secret
    handler._secret.cache_clear()
    handler._elasticsearch.cache_clear()
    for arn in made:
        client.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)


def test_the_search_login_comes_from_its_secret_and_plain_variables_are_ignored(secrets, monkeypatch):
    monkeypatch.setenv("ES_SECRET_ARN", secrets({"username": "exporter", "password": "from-the-secret"}))
    monkeypatch.setenv("ES_USERNAME", "plain")
    monkeypatch.setenv("ES_PASSWORD", "plain-variable")
    assert handler._search_credentials() == {"username": "exporter", "password": "from-the-secret", "api_key": None}
    monkeypatch.setenv("ES_SECRET_ARN", secrets({"api_key": "a2V5"}))
    assert handler._search_credentials()["api_key"] == "a2V5"
    monkeypatch.setenv("ES_SECRET_ARN", secrets({"user": "exporter"}))
    with pytest.raises(ConfigError, match="must hold JSON with username and password, or with api_key"):
        handler._search_credentials()


def test_a_login_over_plain_http_is_refused_until_the_network_is_declared_trusted(secrets, monkeypatch):
    monkeypatch.setenv("ES_URL", os.environ["ES_URL"])  # the stack's node: http://, no TLS
    monkeypatch.setenv("ES_SECRET_ARN", secrets({"username": "exporter", "password": "S3cr3t"}))
    with pytest.raises(ConfigError, match="plain http://") as refused:
        handler._elasticsearch()
    assert "S3cr3t" not in str(refused.value)
    monkeypatch.setenv("ES_ALLOW_HTTP_CREDENTIALS", "true")
    assert handler._elasticsearch().engine.product == "elasticsearch"  # connected (the node ignores the login)


def test_the_mysql_password_variable_is_ignored_when_a_secret_is_set(secrets, monkeypatch):
    monkeypatch.setenv("MYSQL_SECRET_ARN", secrets({"password": support.require_env("MYSQL_PASSWORD")}))
    monkeypatch.setenv("MYSQL_PASSWORD", "not-the-password")
    conn = handler._mysql(os.environ["MYSQL_DB"])
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone()[0] == 1
    finally:
        conn.close()
