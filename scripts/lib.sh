# Shared by the scripts: a virtualenv with metergate and its test tools, made once and refreshed
# when pyproject.toml changes. pip's chatter goes to .venv/install.log and is shown on failure.
ensure_venv() {
    if [[ ! -x .venv/bin/python ]]; then
        python3 -m venv .venv
    fi
    local stamp=.venv/.installed
    if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
        echo "Installing metergate and its test tools into .venv ..." >&2
        if ! { .venv/bin/pip install --upgrade pip && .venv/bin/pip install -e '.[dev]'; } \
            > .venv/install.log 2>&1; then
            cat .venv/install.log >&2
            echo "Installing into .venv failed; the log is above and in .venv/install.log" >&2
            return 1
        fi
        touch "$stamp"
    fi
}

# The broker and database the integration tests use (DESIGN.md section 10): found when one
# answers on 127.0.0.1, else started from var/ (gitignored), else installed with apt-get when
# running as root. Exports METERGATE_TEST_MQTT_URL and METERGATE_TEST_DATABASE_URL; a URL set
# beforehand is used as it is. METERGATE_VAR_DIR, METERGATE_MQTT_PORT and METERGATE_PG_PORT
# override where services live and which port is tried first (tests use them).
ensure_services() {
    ensure_mqtt && ensure_postgres && ensure_browser
}

# The dashboard test drives Debian's chromium through Playwright (Playwright's own browser
# download is not a package registry). Installed when root with apt-get; without it that one
# test skips and says why.
ensure_browser() {
    [[ -x /usr/bin/chromium ]] && return 0
    if [[ $EUID -eq 0 ]] && command -v apt-get > /dev/null; then
        install_package chromium || echo "chromium could not be installed; the dashboard test will skip" >&2
    fi
    return 0
}

ensure_mqtt() {
    [[ -n ${METERGATE_TEST_MQTT_URL:-} ]] && return 0
    local dir=${METERGATE_VAR_DIR:-$PWD/var}/mosquitto port=${METERGATE_MQTT_PORT:-1883}
    port_number METERGATE_MQTT_PORT "$port" || return 1
    if [[ -f $dir/port ]] && mqtt_answers "$(<"$dir/port")"; then
        port=$(<"$dir/port")
    elif ! mqtt_answers "$port"; then
        mosquitto_bin > /dev/null || install_package mosquitto || return 1
        if port_busy "$port"; then port=$(free_port); fi
        start_mosquitto "$dir" "$port" || return 1
    fi
    export METERGATE_TEST_MQTT_URL="mqtt://127.0.0.1:$port"
}

ensure_postgres() {
    [[ -n ${METERGATE_TEST_DATABASE_URL:-} ]] && return 0
    local dir=${METERGATE_VAR_DIR:-$PWD/var}/postgres port=${METERGATE_PG_PORT:-5432} bin
    port_number METERGATE_PG_PORT "$port" || return 1
    if [[ -f $dir/port ]] && pg_answers "$(<"$dir/port")"; then
        port=$(<"$dir/port")
    elif ! pg_answers "$port"; then
        bin=$(pg_bindir) || { install_package postgresql && bin=$(pg_bindir); } || {
            echo "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin" >&2
            return 1
        }
        if port_busy "$port"; then port=$(free_port); fi
        start_postgres "$bin" "$dir" "$port" || return 1
    fi
    export METERGATE_TEST_DATABASE_URL="postgresql://postgres@127.0.0.1:$port/postgres"
}

# True when an MQTT broker on 127.0.0.1:$1 accepts an anonymous MQTT 3.1.1 CONNECT.
mqtt_answers() {
    python3 - "$1" <<'PY'
import os, socket, sys
client_id = f"metergate-probe-{os.getpid()}".encode()
body = b"\x00\x04MQTT\x04\x02\x00\x0a" + len(client_id).to_bytes(2, "big") + client_id
try:
    with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2) as sock:
        sock.sendall(bytes([0x10, len(body)]) + body)
        answer = b""
        while len(answer) < 4:
            chunk = sock.recv(4 - len(answer))
            if not chunk:
                break
            answer += chunk
        sock.sendall(b"\xe0\x00")
except OSError:
    sys.exit(1)
# CONNACK (MQTT 3.1.1 section 3.2): 20 02, session present, return code 0 = accepted.
sys.exit(0 if answer[:2] == b"\x20\x02" and answer[3:4] == b"\x00" else 1)
PY
}

port_number() {
    [[ $2 =~ ^[0-9]+$ ]] && (($2 >= 1 && $2 <= 65535)) && return 0
    echo "$1 must be a TCP port number (1-65535), not '$2'" >&2
    return 1
}

port_busy() {
    python3 -c 'import socket, sys; sys.exit(socket.socket().connect_ex(("127.0.0.1", int(sys.argv[1]))) != 0)' "$1"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

mosquitto_bin() {
    command -v mosquitto || { [[ -x /usr/sbin/mosquitto ]] && echo /usr/sbin/mosquitto; }
}

# Writes $1/mosquitto.conf (deploy/mosquitto.conf listening on 127.0.0.1:$2 only, data and
# log in $1) and prints its path. The test fixtures use it too.
mosquitto_config() {
    local dir=$1 port=$2 deploy
    deploy="$(dirname "${BASH_SOURCE[0]}")/../deploy/mosquitto.conf"
    mkdir -p "$dir/data" || return 1
    sed -e "s|^listener .*|listener $port 127.0.0.1|" \
        -e "s|^persistence_location .*|persistence_location $dir/data/|" \
        -e "s|^log_dest .*|log_dest file $dir/mosquitto.log|" \
        "$deploy" > "$dir/mosquitto.conf" || return 1
    # Run as whoever starts it (as root mosquitto would switch to its own user, which cannot
    # write to this directory).
    printf 'user %s\n' "$(id -un)" >> "$dir/mosquitto.conf"
    echo "$dir/mosquitto.conf"
}

start_mosquitto() {
    local dir=$1 port=$2 config bin
    bin=$(mosquitto_bin) || return 1
    config=$(mosquitto_config "$dir" "$port") || return 1
    printf 'pid_file %s\n' "$dir/mosquitto.pid" >> "$config"
    echo "Starting mosquitto on 127.0.0.1:$port (data and log in $dir) ..." >&2
    "$bin" -c "$config" -d || { cat "$dir/mosquitto.log" >&2; return 1; }
    local tries
    for tries in {1..50}; do
        mqtt_answers "$port" && { echo "$port" > "$dir/port"; return 0; }
        sleep 0.1
    done
    echo "mosquitto did not answer on 127.0.0.1:$port; its log:" >&2
    cat "$dir/mosquitto.log" >&2
    return 1
}

pg_bindir() {
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin 2> /dev/null | sort -V | tail -n 1)
    [[ -n $bin && -x $bin/initdb ]] && echo "$bin"
}

pg_answers() {
    local isready
    isready=$(command -v pg_isready) || isready="$(pg_bindir)/pg_isready"
    [[ -x $isready ]] && "$isready" -q -h 127.0.0.1 -p "$1"
}

# A cluster of our own in $2/data on 127.0.0.1:$3, trust authentication, superuser postgres.
# initdb refuses to run as root, so as root the cluster belongs to the postgres user.
start_postgres() {
    local bin=$1 dir=$2 port=$3 run=()
    if [[ $EUID -eq 0 ]]; then
        id postgres > /dev/null 2>&1 || {
            echo "running as root, but there is no postgres user to own a cluster" >&2
            return 1
        }
        run=(runuser -u postgres --)
    fi
    mkdir -p "$dir" || return 1
    if [[ ! -f $dir/data/PG_VERSION ]]; then
        rm -rf "$dir/data" && mkdir -m 700 "$dir/data" || return 1
        [[ $EUID -eq 0 ]] && chown postgres: "$dir" "$dir/data"
        echo "Creating a PostgreSQL cluster in $dir/data ..." >&2
        "${run[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 \
            > "$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; return 1; }
    fi
    echo "Starting PostgreSQL on 127.0.0.1:$port ..." >&2
    "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
        -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=''" start \
        > /dev/null || { cat "$dir/postgres.log" >&2; return 1; }
    echo "$port" > "$dir/port"
}

install_package() {
    if [[ $EUID -ne 0 ]] || ! command -v apt-get > /dev/null; then
        echo "The tests need $1: install it (e.g. apt-get install $1), or set" \
            "METERGATE_TEST_MQTT_URL / METERGATE_TEST_DATABASE_URL to a running one." >&2
        return 1
    fi
    local log=${METERGATE_VAR_DIR:-$PWD/var}/apt-$1.log
    mkdir -p "$(dirname "$log")"
    echo "Installing $1 with apt-get ..." >&2
    {
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$1" ||
            { apt-get update -q && DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -q --no-install-recommends "$1"; }
    } > "$log" 2>&1 || {
        cat "$log" >&2
        echo "apt-get could not install $1; the log is above and in $log" >&2
        return 1
    }
}
