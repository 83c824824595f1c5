#!/usr/bin/env bash
# Install (Debian's packages) and start a throwaway PostgreSQL for the registry tests; prints the URL.
set -euo pipefail
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
version=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h | grep -q "^$version main"; then
  pg_createcluster "$version" main >&2
fi
pg_ctlcluster "$version" main start >&2 || true   # already running is fine
for _ in $(seq 1 30); do pg_isready -q && break; sleep 1; done
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='brightrun'\"" | grep -q 1 ||
  su postgres -c "psql -qc \"CREATE ROLE brightrun LOGIN PASSWORD 'brightrun'\"" >&2
# CREATEDB: tests/jobs/test_customer_tables.py makes a database of its own per test (the customer's tables
# in its public schema, ours beside them in brightrun)
su postgres -c "psql -qc \"ALTER ROLE brightrun CREATEDB\"" >&2
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname='brightrun_test'\"" | grep -q 1 ||
  su postgres -c "createdb -O brightrun brightrun_test" >&2
echo "postgresql://brightrun:brightrun@127.0.0.1:5432/brightrun_test"
