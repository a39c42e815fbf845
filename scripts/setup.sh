#!/usr/bin/env bash
# Make this machine able to build, test and run Heimdall. Idempotent; safe to
# run again and again (it does nothing that is already done). Works as root on
# a fresh Debian 12 machine; as another user it needs sudo for the first run.
#
#   1. Debian packages: build tools, libpcap, capture tools (tcpdump, tshark,
#      tcpreplay), PostgreSQL, nats-server, Python venv support.
#   2. PostgreSQL running on 127.0.0.1:5432 with a `heimdall` role (password
#      `heimdall`, CREATEDB) and a `heimdall` database: the development and
#      test identity. Tests create and drop their own databases with it.
#   3. NATS with JetStream on 127.0.0.1:4222.
#   4. The deployment validators (scripts/install-validators.sh) and
#      cargo-deny for the dependency policy.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
say() { printf 'setup: %s\n' "$*"; }

# --- 1. packages --------------------------------------------------------------
PACKAGES=(build-essential pkg-config libpcap-dev tcpdump tshark tcpreplay time
          postgresql postgresql-client nats-server python3-venv iproute2
          ca-certificates curl procps util-linux openssl)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # tshark asks whether non-root users may capture; answer no, without a prompt.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "packages present"
fi

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  for _ in $(seq 1 100); do port_open "$1" && return 0; sleep 0.1; done
  say "nothing is listening on 127.0.0.1:$1 after 10 s ($2)"; return 1
}

# --- 2. PostgreSQL ------------------------------------------------------------
if ! port_open 5432; then
  ver="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)"
  if [ -z "$ver" ]; then
    ver="$(ls /usr/lib/postgresql | sort -V | tail -n1)"
    say "creating PostgreSQL $ver cluster"
    $SUDO pg_createcluster "$ver" main >/dev/null
  fi
  say "starting PostgreSQL $ver"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$ver" main start
  wait_port 5432 "PostgreSQL; see /var/log/postgresql/"
else
  say "PostgreSQL is running"
fi
psql_admin() { $SUDO runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -tA "$@"; }
if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = 'heimdall'")" != "1" ]; then
  say "creating role heimdall"
  psql_admin -c "CREATE ROLE heimdall LOGIN CREATEDB PASSWORD 'heimdall'"
fi
if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = 'heimdall'")" != "1" ]; then
  say "creating database heimdall"
  psql_admin -c "CREATE DATABASE heimdall OWNER heimdall"
fi

# --- 3. NATS with JetStream ---------------------------------------------------
if ! port_open 4222; then
  say "starting nats-server with JetStream"
  $SUDO mkdir -p /var/lib/nats-server
  $SUDO start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  wait_port 4222 "nats-server; see /var/log/nats-server.log"
else
  say "NATS is running"
fi
info="$(timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/4222; head -n1 <&3' 2>/dev/null || true)"
if ! grep -q '"jetstream":true' <<<"$info"; then
  say "the NATS server on 127.0.0.1:4222 runs without JetStream; restart it with -js"
  say "(for example: pkill nats-server && make setup)"
  exit 1
fi

# --- 4. tools -----------------------------------------------------------------
bash "$ROOT/scripts/install-validators.sh"
if ! command -v cargo-deny >/dev/null 2>&1; then
  say "installing cargo-deny (a few minutes, once)"
  cargo install --locked --quiet cargo-deny
fi
say "ready"
