#!/bin/sh
# docker-compose.yml's setup job (temporalio/admin-tools): wait until the server answers, create
# the namespace if it is missing, wait until it is usable, create the runbooks' search
# attributes. Safe to run again; compose restarts it until it succeeds.
set -eu
NAMESPACE=${TEMPORAL_NAMESPACE:-default}
ATTRIBUTES="RunbookProcedure RunbookResource RunbookSeverity RunbookEnvironment RunbookGate RunbookGateLevel"

until temporal operator cluster health >/dev/null 2>&1; do
  echo "waiting for the Temporal server at $TEMPORAL_ADDRESS"
  sleep 2
done
temporal operator namespace describe --namespace "$NAMESPACE" >/dev/null 2>&1 ||
  temporal operator namespace create --namespace "$NAMESPACE" --retention 30d
until temporal operator namespace describe --namespace "$NAMESPACE" >/dev/null 2>&1; do
  echo "waiting for namespace $NAMESPACE"
  sleep 2
done
existing=$(temporal operator search-attribute list --namespace "$NAMESPACE")
for name in $ATTRIBUTES; do
  if ! echo "$existing" | grep -qw "$name"; then
    temporal operator search-attribute create --namespace "$NAMESPACE" --name "$name" --type Keyword
  fi
done
echo "namespace $NAMESPACE ready with the runbooks' search attributes"
