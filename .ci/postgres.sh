# Sourced by .ci/run: ensure_postgres [cluster] [port] makes sure a PostgreSQL cluster
# (Debian's) serves 127.0.0.1:port with a database "test", and exports
# GATEWISE_TEST_POSTGRES_URL for the store tests (tests/gateway/storage). Loopback only.
#
# Machines of this kind start PostgreSQL before the session, with trust for 127.0.0.1;
# elsewhere it may be stopped (started here), missing (Debian's package is installed), or
# fresh from Debian, asking 127.0.0.1 for a password: then the postgres user gets a new
# random one (set over the local socket, where Debian lets root in as postgres) and the
# url carries it. Returns non-zero, saying why, when it cannot.

ensure_postgres() {
  local cluster="${1:-main}" port="${2:-5432}" version url password
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "ci: installing Debian's postgresql" >&2
    apt-get update -qq || return 1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null || return 1
  fi
  version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)"
  [ -n "$version" ] || version="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
  if ! pg_isready -q -h 127.0.0.1 -p "$port"; then
    if [ ! -d "/etc/postgresql/$version/$cluster" ]; then
      pg_createcluster "$version" "$cluster" -p "$port" >/dev/null || return 1
    fi
    echo "ci: starting PostgreSQL $version/$cluster on 127.0.0.1:$port" >&2
    pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" start || return 1
    for _ in $(seq 60); do
      pg_isready -q -h 127.0.0.1 -p "$port" && break
      sleep 0.5
    done
    pg_isready -h 127.0.0.1 -p "$port" >&2 || return 1
  fi
  url="postgresql://postgres@127.0.0.1:$port"
  if ! env -u PGPASSWORD psql "$url/postgres" -w -tAc "SELECT 1" >/dev/null 2>&1; then
    echo "ci: 127.0.0.1 asks for a password: setting one for the postgres user" >&2
    password="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
    su postgres -c "psql -q -p $port -c \"ALTER USER postgres PASSWORD '$password'\"" || return 1
    url="postgresql://postgres:$password@127.0.0.1:$port"
  fi
  if [ "$(psql "$url/postgres" -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'")" != 1 ]; then
    psql "$url/postgres" -qc "CREATE DATABASE test" || return 1
  fi
  export GATEWISE_TEST_POSTGRES_URL="$url/test"
}
