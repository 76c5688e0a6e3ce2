#!/usr/bin/env bash
# Build dist/lambda.zip for the python3.12 Lambda runtime: the core package es_export, the handler package es_export_lambda and their
# pinned dependencies (pure Python, and msgspec built for the runtime). The handler is es_export_lambda.handler.handler.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
BUILD="$ROOT/build/lambda"
ZIP="$ROOT/dist/lambda.zip"
rm -rf "$BUILD" "$ZIP"
mkdir -p "$BUILD" "$(dirname "$ZIP")"
# Wheels for the Lambda's Python and platform, whatever Python builds the zip.
"$PY" -m pip install -q --target "$BUILD" --no-deps --only-binary=:all: --require-hashes \
  --platform manylinux2014_x86_64 --implementation cp --python-version 3.12 \
  -r "$ROOT/deploy/lambda-requirements.txt"
cp -r "$ROOT/include/es_export" "$ROOT/include/es_export_lambda" "$BUILD/"
# The CA bundle of the tracking database's TLS certificate (for RDS: global-bundle.pem from
# truststore.pki.rds.amazonaws.com), packaged as rds-ca-bundle.pem, the template's default MYSQL_SSL_CA.
if [ -n "${RDS_CA_BUNDLE:-}" ]; then
  grep -q "BEGIN CERTIFICATE" "$RDS_CA_BUNDLE" || { echo "RDS_CA_BUNDLE=$RDS_CA_BUNDLE is not a PEM bundle" >&2; exit 1; }
  cp "$RDS_CA_BUNDLE" "$BUILD/rds-ca-bundle.pem"
else
  echo "note: no RDS_CA_BUNDLE given, so the package holds no CA bundle for MySQL TLS (set MYSQL_SSL_CA to one, or to empty)"
fi
find "$BUILD" -name __pycache__ -prune -exec rm -rf {} +
rm -rf "$BUILD"/bin
(cd "$BUILD" && zip -q -r -X "$ZIP" .)
echo "built $ZIP: $(du -k "$ZIP" | cut -f1) KB ($(unzip -l "$ZIP" | tail -1 | awk '{print $2}') files)"
