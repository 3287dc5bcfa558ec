#!/bin/sh
# docker-compose.yml's schema job (temporalio/admin-tools): create the Temporal and visibility
# databases and bring their schemas to the image's version. Safe to run again.
set -eu
SQL="temporal-sql-tool --plugin postgres12 --ep $POSTGRES_SEEDS -p 5432 -u $POSTGRES_USER"
export SQL_PASSWORD="$POSTGRES_PWD"
for db in temporal temporal_visibility; do
  $SQL --db "$db" create || true  # exists on a second run
done
$SQL --db temporal setup-schema -v 0.0
$SQL --db temporal update-schema -d /etc/temporal/schema/postgresql/v12/temporal/versioned
$SQL --db temporal_visibility setup-schema -v 0.0
$SQL --db temporal_visibility update-schema -d /etc/temporal/schema/postgresql/v12/visibility/versioned
