#!/usr/bin/env bash
# Make sure PostgreSQL and Mosquitto are up on this machine: start them if stopped,
# install them (Debian packages) if missing. Used by `make demo` and `make test`.
set -euo pipefail

log() { printf 'services: %s\n' "$*" >&2; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
    for _ in $(seq 1 60); do port_open "$1" && return 0; sleep 0.5; done
    return 1
}
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
    log "installing $*"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

postgres() {
    if port_open 5432; then return 0; fi
    if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
        apt_install postgresql
    fi
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    log "starting PostgreSQL $version"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    wait_port 5432 || { log "PostgreSQL did not come up on 127.0.0.1:5432"; exit 1; }
    # Tests and the demo connect as postgres over TCP without a password (trust auth).
    if ! psql -h 127.0.0.1 -U postgres -d postgres -tAc 'select 1' >/dev/null 2>&1; then
        local hba
        hba=$(as_root -u postgres psql -tAc 'show hba_file' 2>/dev/null || echo "/etc/postgresql/$version/main/pg_hba.conf")
        log "allowing trust auth on 127.0.0.1 in $hba"
        as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
        as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload
    fi
}

mosquitto_up() {
    if port_open 1883; then return 0; fi
    if ! command -v mosquitto >/dev/null 2>&1; then
        apt_install mosquitto
    fi
    log "starting Mosquitto"
    if [ -f /etc/mosquitto/mosquitto.conf ]; then
        as_root mkdir -p /run/mosquitto /var/log/mosquitto /var/lib/mosquitto
        as_root chown -R mosquitto: /run/mosquitto /var/log/mosquitto /var/lib/mosquitto 2>/dev/null || true
        as_root mosquitto -d -c /etc/mosquitto/mosquitto.conf
    else
        as_root mosquitto -d -p 1883
    fi
    wait_port 1883 || { log "Mosquitto did not come up on 127.0.0.1:1883"; exit 1; }
}

postgres
mosquitto_up
log "PostgreSQL 127.0.0.1:5432 and Mosquitto 127.0.0.1:1883 are up"
