#!/usr/bin/env bash
# `make audit`: the dependency policy, offline. cargo-deny checks licences
# (deny.toml), sources (crates.io only), bans (duplicates warned) and RustSec
# advisories against the snapshot in ../shared/advisory-db, which is copied
# into a git repository under .tools/ because cargo-deny reads its database's
# age from git.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SNAPSHOT="$(cd "${1:-$ROOT/../shared/advisory-db}" && pwd)"
DBS="$ROOT/.tools/advisory-dbs"
# cargo-deny keeps the default database in <db-path>/advisory-db-<xxh64 of its URL>.
DB="$DBS/advisory-db-3157b0e258782691"
cd "$ROOT"

command -v cargo-deny >/dev/null || { echo "audit: cargo-deny is missing; run 'make setup'"; exit 1; }
stamp="$(cat "$SNAPSHOT/SNAPSHOT" 2>/dev/null || echo unknown)"
if [ ! -f "$DB/.snapshot" ] || [ "$(cat "$DB/.snapshot")" != "$stamp" ]; then
  rm -rf "$DB"; mkdir -p "$DB"
  cp -r "$SNAPSHOT/." "$DB/"
  chmod -R u+w "$DB"
  when="$(grep -o '([0-9-]*)' <<<"$stamp" | tr -d '()' || true)"
  (cd "$DB" && git init -q && git add -A && \
    GIT_AUTHOR_DATE="${when:-now}T00:00:00Z" GIT_COMMITTER_DATE="${when:-now}T00:00:00Z" \
    git -c user.name=snapshot -c user.email=snapshot@localhost commit -qm "$stamp")
  echo "$stamp" >"$DB/.snapshot"
fi
echo "audit: advisories from $stamp"
# cargo-deny reads every platform's dependencies offline; fetch them first.
cargo fetch --quiet
cargo deny --offline --log-level error check
