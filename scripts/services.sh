#!/usr/bin/env bash
# Makes sure the PostgreSQL and Redis servers the test suite uses answer, starting local ones
# that are stopped. A server that cannot be had is an error naming it: the suite never skips
# what needs it.
#
# TEST_DATABASE_URL and TEST_REDIS_URL (the same variables as config/settings/test.py) choose
# the servers; when one points to another machine it is only checked, never started.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

DATABASE_URL_FOR_TESTS=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/hotel_billing}
REDIS_URL_FOR_TESTS=${TEST_REDIS_URL:-redis://127.0.0.1:6379/15}
WAIT_SECONDS=${SERVICES_WAIT_SECONDS:-30}

die() {
    echo "services: $*" >&2
    exit 1
}

# Prints "host port" of a URL such as scheme://user:pass@host:port/path.
url_host_port() {
    local url=$1 default_port=$2 rest host port
    rest=${url#*://}
    rest=${rest%%/*}
    rest=${rest%%\?*}
    rest=${rest##*@}
    if [[ $rest == \[* ]]; then
        host=${rest%%]*}
        host=${host#[}
        port=${rest##*]}
        port=${port#:}
    else
        host=${rest%%:*}
        port=${rest#"$host"}
        port=${port#:}
    fi
    echo "${host:-127.0.0.1} ${port:-$default_port}"
}

is_local() {
    case $1 in
        127.* | localhost | ::1) return 0 ;;
        *) return 1 ;;
    esac
}

tcp_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

postgres_ready() {
    if command -v pg_isready >/dev/null; then
        pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 2
    else
        tcp_open "$PG_HOST" "$PG_PORT"
    fi
}

redis_ready() {
    if command -v redis-cli >/dev/null; then
        [[ $(timeout 5 redis-cli -u "$REDIS_URL_FOR_TESTS" ping 2>/dev/null) == PONG ]]
    elif [[ -x .venv/bin/python ]]; then
        .venv/bin/python - "$REDIS_URL_FOR_TESTS" <<'PY' 2>/dev/null
import sys

import redis

redis.Redis.from_url(sys.argv[1], socket_connect_timeout=2).ping()
PY
    else
        tcp_open "$REDIS_HOST" "$REDIS_PORT"
    fi
}

wait_for() {
    local name=$1 check=$2 waited=0
    until "$check"; do
        ((waited >= WAIT_SECONDS)) && return 1
        sleep 1
        waited=$((waited + 1))
    done
    echo "services: $name is ready."
}

start_postgres() {
    command -v pg_ctlcluster >/dev/null ||
        die "PostgreSQL is not installed here (no pg_ctlcluster): install the Debian package postgresql, or set TEST_DATABASE_URL to a reachable server."
    local version
    version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
    [[ -n $version ]] || die "PostgreSQL has no cluster in /etc/postgresql: cannot start it."
    echo "services: starting PostgreSQL $version..."
    pg_ctlcluster --skip-systemctl-redirect "$version" main start ||
        die "PostgreSQL $version could not be started (pg_ctlcluster failed; if it says the cluster is already running, that cluster does not listen on $PG_HOST:$PG_PORT): see /var/log/postgresql/."
}

start_redis() {
    command -v redis-server >/dev/null ||
        die "Redis is not installed here (no redis-server): install the Debian package redis-server, or set TEST_REDIS_URL to a reachable server."
    echo "services: starting Redis on port $REDIS_PORT..."
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" \
        --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log ||
        die "Redis could not be started (redis-server failed): see /var/log/redis/ci.log."
}

read -r PG_HOST PG_PORT < <(url_host_port "$DATABASE_URL_FOR_TESTS" 5432)
read -r REDIS_HOST REDIS_PORT < <(url_host_port "$REDIS_URL_FOR_TESTS" 6379)

if postgres_ready; then
    echo "services: PostgreSQL at $PG_HOST:$PG_PORT is running."
elif is_local "$PG_HOST"; then
    start_postgres
    wait_for "PostgreSQL at $PG_HOST:$PG_PORT" postgres_ready ||
        die "PostgreSQL at $PG_HOST:$PG_PORT did not answer within ${WAIT_SECONDS}s after starting: see /var/log/postgresql/."
else
    die "PostgreSQL at $PG_HOST:$PG_PORT (TEST_DATABASE_URL) does not answer; it is not local, so it is not started here."
fi

if redis_ready; then
    echo "services: Redis at $REDIS_HOST:$REDIS_PORT is running."
elif is_local "$REDIS_HOST"; then
    start_redis
    wait_for "Redis at $REDIS_HOST:$REDIS_PORT" redis_ready ||
        die "Redis at $REDIS_HOST:$REDIS_PORT did not answer within ${WAIT_SECONDS}s after starting: see /var/log/redis/ci.log."
else
    die "Redis at $REDIS_HOST:$REDIS_PORT (TEST_REDIS_URL) does not answer; it is not local, so it is not started here."
fi
