#!/usr/bin/env bash
# Build dist/lambda.zip for the python3.12 Lambda runtime: the core package es_export, the handler package es_export_lambda and their
# pinned pure-Python dependencies. The handler is es_export_lambda.handler.handler.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
BUILD="$ROOT/build/lambda"
ZIP="$ROOT/dist/lambda.zip"
rm -rf "$BUILD" "$ZIP"
mkdir -p "$BUILD" "$(dirname "$ZIP")"
# Wheels for the Lambda's Python and platform, whatever Python builds the zip.
"$PY" -m pip install -q --target "$BUILD" --no-deps --only-binary=:all: \
  --platform manylinux2014_x86_64 --implementation cp --python-version 3.12 \
  -r "$ROOT/deploy/lambda-requirements.txt"
cp -r "$ROOT/include/es_export" "$ROOT/include/es_export_lambda" "$BUILD/"
find "$BUILD" -name __pycache__ -prune -exec rm -rf {} +
rm -rf "$BUILD"/bin
(cd "$BUILD" && zip -q -r -X "$ZIP" .)
echo "built $ZIP: $(du -k "$ZIP" | cut -f1) KB ($(unzip -l "$ZIP" | tail -1 | awk '{print $2}') files)"
