#!/usr/bin/env bash
# vorchd's installer and launcher.
#
#   ./install.sh PM_FILE IMAGE_FILE FLAVOR_FILE   set up everything, (re)start the daemon
#   ./install.sh                                  the bundled example (this machine, a tiny image)
#   ./install.sh stop                             stop the daemon on VORCHD_PORT (state kept)
#   ./install.sh deps                             system packages, venv, libvirtd and KVM only
#   ./install.sh test [PYTEST ARGS...]            deps, then the test suite
#   ./install.sh ha [PM_FILE IMAGE_FILE FLAVOR_FILE]   the highly available example on this
#                                                 machine (Redis + replica, 3 Sentinels, 2
#                                                 daemons, HAProxy on the REST port)
#   ./install.sh ha stop                          stop all of that (state kept)
#   ./install.sh ceph [PM_FILE IMAGE_FILE FLAVOR_FILE] a one-node Ceph on this machine and
#                                                 the daemon with its volumes on it (RBD)
#   ./install.sh ceph stop                        stop that daemon and Ceph (data kept)
#
# Settings: VORCHD_CONFIG (default REPO/etc/vorchd.ini), VORCHD_PORT (default: the ini's
# [server] port), VORCHD_REDIS (default: the ini's [redis] url), VORCHD_VENV (default
# /opt/vorchd/venv). Everything per daemon (pid file, log file) is keyed by its REST port,
# so several daemons can run side by side. Rerunning is safe: state lives in Redis.
set -euo pipefail

REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
VENV=${VORCHD_VENV:-/opt/vorchd/venv}
STATE_DIR=/var/lib/vorchd
POOL_DIR=$STATE_DIR/pool
IMAGE_DIR=$STATE_DIR/images
LOG_DIR=/var/log/vorchd
RUN_DIR=/run
EXAMPLE_IMAGE=$IMAGE_DIR/vorchd-linux.img
# The libvirt network the example's VMs attach to (NAT and DHCP on 192.168.122.0/24).
EXAMPLE_NETWORK=default
WAIT_SECONDS=90
STOP_SECONDS=20

PACKAGES=(
    libvirt-daemon-system libvirt-clients libvirt-dev pkg-config
    qemu-system-x86 qemu-utils
    redis-server redis-tools openssh-client
    python3-venv
    gcc libc6-dev   # libvirt-python is built from source
    curl
    dnsmasq-base    # DHCP (and DNS) of libvirt networks, which VMs' NICs attach to
)

# What the bundled example's small Linux is built from (vorchd/linuximage.py): busybox,
# syslinux and mtools; a kernel package only where /boot has no kernel (example_kernel).
EXAMPLE_PACKAGES=(busybox-static syslinux syslinux-common mtools)

say() { printf 'install.sh: %s\n' "$*"; }
warn() { printf 'install.sh: warning: %s\n' "$*" >&2; }
die() {
    printf 'install.sh: error: %s\n' "$*" >&2
    exit 1
}

usage() {
    cat <<EOF
usage: ./install.sh PM_FILE IMAGE_FILE FLAVOR_FILE   set up and (re)start the daemon
       ./install.sh                                  run the bundled example
       ./install.sh stop                             stop the daemon on VORCHD_PORT
       ./install.sh deps                             install and start what vorchd needs
       ./install.sh test [PYTEST ARGS...]            deps, then run the test suite
       ./install.sh ha [PM_FILE IMAGE_FILE FLAVOR_FILE]   highly available example (README)
       ./install.sh ha stop                          stop the highly available example
       ./install.sh ceph [PM_FILE IMAGE_FILE FLAVOR_FILE]   volumes on a one-node Ceph here
       ./install.sh ceph stop                        stop that daemon and Ceph (data kept)
settings (environment): VORCHD_CONFIG, VORCHD_PORT, VORCHD_REDIS, VORCHD_VENV,
       VORCHD_CEPH_DIR (./install.sh ceph's state; default /var/lib/vorchd/ceph)
EOF
}

# ---------------------------------------------------------------------------------------
# root

ensure_root() {
    [[ $EUID -eq 0 ]] && return 0
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        say "not root: re-running under sudo"
        exec sudo -n --preserve-env=VORCHD_CONFIG,VORCHD_PORT,VORCHD_REDIS,VORCHD_VENV,VORCHD_CEPH_DIR,VORCHD_CEPH_PORT,CI \
            "$BASH" "$REPO/install.sh" "$@"
    fi
    die "must run as root (try: sudo ./install.sh $*)"
}

# ---------------------------------------------------------------------------------------
# system packages

is_installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true) == "install ok installed" ]]
}

APT_UPDATED=
apt_install() {
    local missing=() p
    for p in "$@"; do
        is_installed "$p" || missing+=("$p")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    command -v apt-get >/dev/null 2>&1 ||
        die "missing packages (${missing[*]}) and no apt-get: install them yourself"
    say "installing packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if [[ -z $APT_UPDATED ]]; then
        apt-get update -q || die "apt-get update failed"
        APT_UPDATED=1
    fi
    apt-get install -y -q "${missing[@]}" </dev/null || die "apt-get install ${missing[*]} failed"
}

# ---------------------------------------------------------------------------------------
# Python and the venv

# Succeeds if $1 is a Python >= 3.11 that can make a venv with pip in it.
python_ok() {
    "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1
}

# Sets PYTHON to the interpreter the venv is made with.
find_python() {
    local c
    for c in python3.11 python3 python3.13 python3.12 /usr/bin/python3.11 /usr/bin/python3; do
        if command -v "$c" >/dev/null 2>&1 && python_ok "$c"; then
            PYTHON=$(command -v "$c")
            return 0
        fi
    done
    # An older distribution (Ubuntu 22.04 has 3.10): try its python3.11 packages.
    if command -v apt-cache >/dev/null 2>&1 && apt-cache show python3.11-venv >/dev/null 2>&1; then
        apt_install python3.11 python3.11-venv python3.11-dev
        if python_ok /usr/bin/python3.11; then
            PYTHON=/usr/bin/python3.11
            return 0
        fi
    fi
    die "no Python >= 3.11 with venv found (tried python3.11, python3, /usr/bin/python3)"
}

# The distribution's Python needs its headers to build libvirt-python.
ensure_python_headers() {
    local inc ver
    inc=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
    [[ -f $inc/Python.h ]] && return 0
    ver=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    if [[ $PYTHON == /usr/bin/* ]]; then
        apt_install "python$ver-dev"
    else
        warn "$inc/Python.h is missing: building libvirt-python may fail"
    fi
}

venv_python_ok() {
    [[ -x $VENV/bin/python ]] &&
        "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1
}

# A fingerprint of what the venv was installed from: a rerun with nothing changed skips pip.
venv_stamp() {
    {
        printf '%s\n' "$REPO"
        cat "$REPO/setup.py" "$REPO/pyproject.toml" 2>/dev/null || true
    } | sha256sum | cut -d' ' -f1
}

# The venv imports vorchd from this repo, the twistd plugin and libvirt included.
venv_complete() {
    (cd / && "$VENV/bin/python" -c '
import os, sys
import klein, libvirt, pytest, twisted, txredisapi  # noqa: F401
import vorchd
repo = os.path.realpath(sys.argv[1])
sys.exit(0 if os.path.realpath(vorchd.__file__).startswith(repo + os.sep) else 1)
' "$REPO") >/dev/null 2>&1
}

setup_venv() {
    if ! venv_python_ok; then
        find_python
        ensure_python_headers
        say "creating the venv $VENV with $PYTHON ($("$PYTHON" -V 2>&1))"
        mkdir -p "$(dirname "$VENV")"
        "$PYTHON" -m venv --clear "$VENV" || die "cannot create the venv $VENV"
    fi
    local stamp
    stamp=$(venv_stamp)
    if [[ -f $VENV/.vorchd-stamp && $(cat "$VENV/.vorchd-stamp") == "$stamp" ]] && venv_complete; then
        say "venv $VENV is up to date"
        return 0
    fi
    say "installing vorchd and its dependencies into $VENV"
    rm -f "$VENV/.vorchd-stamp"
    local rc=0
    # compat mode puts the repo itself on sys.path: twistd finds twisted/plugins there.
    (cd "$REPO" && "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
        -e "${REPO}[test]" --config-settings editable_mode=compat 2>&1 </dev/null) |
        { grep -v "^WARNING: Location '.*' is ignored" || true; } || rc=$?
    [[ $rc -eq 0 ]] || die "pip install failed (exit $rc)"
    venv_complete || die "the venv $VENV cannot import vorchd from $REPO after pip install"
    printf '%s\n' "$stamp" >"$VENV/.vorchd-stamp"
}

# ---------------------------------------------------------------------------------------
# libvirtd, virtlogd and KVM

have_systemd() { [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; }

libvirt_up() { virsh -c qemu:///system version >/dev/null 2>&1; }

# A unix socket someone accepts connections on.
socket_alive() {
    [[ -S $1 ]] || return 1
    local py=python3
    [[ -x $VENV/bin/python ]] && py=$VENV/bin/python
    "$py" -c 'import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(2)
s.connect(sys.argv[1])' "$1" >/dev/null 2>&1
}

setup_kvm() {
    if [[ ! -e /dev/kvm ]]; then
        say "no /dev/kvm: guests will run under plain QEMU emulation"
        return 0
    fi
    getent group kvm >/dev/null 2>&1 || groupadd -r kvm 2>/dev/null || true
    if getent group kvm >/dev/null 2>&1; then
        local group mode
        group=$(stat -c %G /dev/kvm)
        mode=$(stat -c %a /dev/kvm)
        if [[ $group != kvm || $((8#$mode & 8#060)) -ne $((8#060)) ]]; then
            if chgrp kvm /dev/kvm 2>/dev/null && chmod 660 /dev/kvm 2>/dev/null; then
                say "/dev/kvm: group kvm, mode 0660"
            else
                warn "cannot give the kvm group /dev/kvm: guests may fall back to emulation"
            fi
        fi
        if id libvirt-qemu >/dev/null 2>&1 && ! id -nG libvirt-qemu | tr ' ' '\n' | grep -qx kvm; then
            usermod -a -G kvm libvirt-qemu 2>/dev/null ||
                warn "cannot add libvirt-qemu to the kvm group"
        fi
    fi
}

# retry TIMES DELAY CMD...: run CMD until it succeeds, at most TIMES times, DELAY seconds
# apart; fails if it never does.
retry() {
    local times=$1 delay=$2 i
    shift 2
    for ((i = 0; i < times; i++)); do
        "$@" && return 0
        sleep "$delay"
    done
    return 1
}

start_libvirtd() {
    if libvirt_up; then
        say "libvirtd is running (qemu:///system answers)"
        return 0
    fi
    if have_systemd; then
        say "starting virtlogd and libvirtd with systemd"
        systemctl start virtlogd.socket virtlogd libvirtd >/dev/null 2>&1 || true
    else
        if socket_alive /run/libvirt/virtlogd-sock; then
            say "virtlogd is running"
        else
            say "starting virtlogd"
            virtlogd -d || die "virtlogd -d failed"
        fi
        if socket_alive /run/libvirt/libvirt-sock; then
            say "libvirtd is running but qemu:///system does not answer yet; waiting"
        else
            say "starting libvirtd"
            libvirtd -d || die "libvirtd -d failed"
        fi
    fi
    if retry 60 0.5 libvirt_up; then
        say "libvirtd is up"
        return 0
    fi
    virsh -c qemu:///system version >&2 || true
    die "libvirtd does not answer on qemu:///system"
}

deps() {
    apt_install "${PACKAGES[@]}"
    setup_venv
    link_commands
    setup_kvm
    start_libvirtd
}

# The admin console on the PATH, wherever the venv is.
link_commands() {
    [[ -d /usr/local/bin ]] || return 0
    ln -sf "$VENV/bin/vorchd-admin" /usr/local/bin/vorchd-admin
    ln -sf "$VENV/bin/vorch" /usr/local/bin/vorch
    ln -sf "$VENV/bin/vorchd-sim" /usr/local/bin/vorchd-sim
}

# ---------------------------------------------------------------------------------------
# settings

# The settings and the input files are read by vorchd itself, through its command-line
# entry for scripts (vorchd/config_cli.py): never parsed again here.
config_cli() { (cd "$REPO" && "$VENV/bin/python" -m vorchd.config_cli "$@"); }

# Reads the settings the daemon itself will use (the ini, then VORCHD_PORT and
# VORCHD_REDIS). Sets PORT, INTERFACE, REDIS_HOST, REDIS_PORT, REDIS_PASSWORD, ADMIN_PORT
# (empty: no admin port) and ADMIN_PASSWD_FILE. One value a line; the last key asked for
# is never empty, since $(...) drops trailing empty lines.
read_settings() {
    local out rc=0 v
    out=$(config_cli get --config "$CONFIG" port interface redis.host redis.port \
        redis.password admin_port admin_passwd_file 2>&1 </dev/null) || rc=$?
    [[ $rc -eq 0 ]] || die "${out:-cannot read the settings from $CONFIG}"
    mapfile -t v <<<"$out"
    [[ ${#v[@]} -eq 7 && ${v[0]} =~ ^[0-9]+$ ]] || die "cannot read the settings: $out"
    PORT=${v[0]} INTERFACE=${v[1]} REDIS_HOST=${v[2]} REDIS_PORT=${v[3]}
    REDIS_PASSWORD=${v[4]} ADMIN_PORT=${v[5]} ADMIN_PASSWD_FILE=${v[6]}
}

# Without vorchd in the venv (say, stop before any install) nothing here reads the ini:
# the port is VORCHD_PORT, else the default, and we say so rather than guess.
read_port_fallback() {
    PORT=${VORCHD_PORT:-80}
    [[ $PORT =~ ^[0-9]+$ ]] || die "VORCHD_PORT=$PORT is not a port"
    if [[ -z ${VORCHD_PORT:-} ]]; then
        say "no vorchd in $VENV to read $CONFIG with: using port 80 (set VORCHD_PORT for another)"
    fi
}

# ---------------------------------------------------------------------------------------
# Redis

redis_ping() {
    local h=$REDIS_HOST
    [[ $h == localhost ]] && h=127.0.0.1
    [[ $(REDISCLI_AUTH=${REDIS_PASSWORD:-} timeout 10 redis-cli -h "$h" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]
}

# A local Redis started by someone else (say, Debian's own redis-server service) may
# run without AOF: vorchd's state must survive a crash, so turn it on, and keep it on
# across that Redis's restarts where its config file can be rewritten.
ensure_aof() {
    case $REDIS_HOST in
    127.0.0.1 | localhost | ::1) ;;
    *) return 0 ;;
    esac
    local cli=(timeout 10 redis-cli -h 127.0.0.1 -p "$REDIS_PORT")
    local aof
    aof=$(REDISCLI_AUTH=${REDIS_PASSWORD:-} "${cli[@]}" config get appendonly 2>/dev/null | tail -n 1)
    [[ $aof == no ]] || return 0
    say "Redis on port $REDIS_PORT runs without AOF; turning appendonly on"
    REDISCLI_AUTH=${REDIS_PASSWORD:-} "${cli[@]}" config set appendonly yes >/dev/null ||
        warn "could not turn AOF on: vorchd's state is only as durable as that Redis's snapshots"
    REDISCLI_AUTH=${REDIS_PASSWORD:-} "${cli[@]}" config rewrite >/dev/null 2>&1 ||
        warn "Redis on port $REDIS_PORT has no config file to keep AOF on across its restarts"
}

ensure_redis() {
    read_sentinel_settings
    if [[ -n $SENTINEL_MASTER ]]; then
        ensure_sentinel_master
        return 0
    fi
    if redis_ping; then
        say "Redis at $REDIS_HOST:$REDIS_PORT answers; using it"
        ensure_aof
        return 0
    fi
    case $REDIS_HOST in
    127.0.0.1 | localhost | ::1) ;;
    *) die "Redis at $REDIS_HOST:$REDIS_PORT does not answer PING" ;;
    esac
    local dir=$STATE_DIR/redis-$REDIS_PORT
    local pidfile=$RUN_DIR/vorchd-redis-$REDIS_PORT.pid
    local log=$LOG_DIR/redis-$REDIS_PORT.log
    mkdir -p "$dir"
    chmod 0750 "$dir"
    say "starting redis-server on 127.0.0.1:$REDIS_PORT (AOF, dir $dir)"
    # Durability (AOF, its fsync) is etc/redis.conf's, the file the tests run Redis with.
    local args=("$REPO/etc/redis.conf" --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT"
        --dir "$dir" --pidfile "$pidfile" --logfile "$log")
    [[ -n ${REDIS_PASSWORD:-} ]] && args+=(--requirepass "$REDIS_PASSWORD")
    redis-server "${args[@]}" </dev/null || die "redis-server failed to start (see $log)"
    if retry 40 0.25 redis_ping; then
        say "Redis is up on 127.0.0.1:$REDIS_PORT"
        return 0
    fi
    tail -n 20 "$log" >&2 2>/dev/null || true
    die "redis-server on port $REDIS_PORT does not answer PING (log: $log)"
}

# ---------------------------------------------------------------------------------------
# High availability: a Redis behind Sentinel (redis+sentinel:// URLs), and ./install.sh ha

# What ./install.sh ha needs besides what the daemon needs.
HA_PACKAGES=(redis-sentinel haproxy)
HA_DIR=$STATE_DIR/ha
HA_MASTER_NAME=vorchd
# Loopback ports of ./install.sh ha (the first Redis starts as the master). Debian's own
# redis-sentinel service, if it runs, has 26379.
read -r -a HA_REDIS_PORTS <<<"${VORCHD_HA_REDIS_PORTS:-6380 6381}"
read -r -a HA_SENTINEL_PORTS <<<"${VORCHD_HA_SENTINEL_PORTS:-26380 26381 26382}"
read -r -a HA_DAEMON_PORTS <<<"${VORCHD_HA_DAEMON_PORTS:-8081 8082}"
HA_STATS_PORT=${VORCHD_HA_STATS_PORT:-8404}

# Sets SENTINEL_MASTER (the master's name; empty for a redis:// URL) and SENTINELS
# ("host:port ...") from the settings the daemon will use.
read_sentinel_settings() {
    local out rc=0 v
    out=$(config_cli get --config "$CONFIG" redis.master redis.sentinels 2>&1 </dev/null) || rc=$?
    [[ $rc -eq 0 ]] || die "${out:-cannot read the settings from $CONFIG}"
    mapfile -t v <<<"$out"
    SENTINEL_MASTER=${v[0]}
    SENTINELS=$("$VENV/bin/python" -c \
        'import json, sys; print(" ".join(f"{h}:{p}" for h, p in json.loads(sys.argv[1])))' \
        "${v[1]}")
}

# The master's host:port as the first Sentinel that answers names it.
sentinel_master_addr() {
    local s out a
    for s in $SENTINELS; do
        out=$(timeout 5 redis-cli -h "${s%:*}" -p "${s##*:}" \
            sentinel get-master-addr-by-name "$SENTINEL_MASTER" 2>/dev/null) || continue
        mapfile -t a <<<"$out"
        if [[ ${#a[@]} -eq 2 && ${a[1]} =~ ^[0-9]+$ ]]; then
            printf '%s:%s\n' "${a[0]}" "${a[1]}"
            return 0
        fi
    done
    return 1
}

# ensure_redis for a Sentinel URL: nothing to start here (the Sentinels and Redis servers
# are the operator's, or ./install.sh ha's); the Sentinels must name a master that answers.
ensure_sentinel_master() {
    local addr
    addr=$(sentinel_master_addr) ||
        die "no Sentinel of $SENTINELS answers with a master named $SENTINEL_MASTER"
    REDIS_HOST=${addr%:*} REDIS_PORT=${addr##*:}
    redis_ping || die "Redis master $addr (named by the Sentinels) does not answer PING"
    say "Redis master $SENTINEL_MASTER is $addr, per the Sentinels $SENTINELS; using it"
}

# A Redis or Sentinel without a password answers on loopback port $1.
local_redis_ping() { [[ $(timeout 5 redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null) == PONG ]]; }

# One Redis of the HA example on loopback port $1 (a replica of port $2 if given), with
# AOF, its config file written once (Sentinel rewrites it on failovers: reruns keep it).
ha_redis_node() {
    local port=$1 of=${2:-} dir=$HA_DIR/redis-$1
    if local_redis_ping "$port"; then
        say "Redis on 127.0.0.1:$port answers; leaving it as it is"
        return 0
    fi
    mkdir -p "$dir"
    chmod 0750 "$dir"
    local role=" (its role as Sentinel last left it in $dir/redis.conf)"
    if [[ ! -e $dir/redis.conf ]]; then
        {
            printf 'port %s\nbind 127.0.0.1\ndir "%s"\n' "$port" "$dir"
            printf 'appendonly yes\nappendfsync everysec\n'
            [[ -z $of ]] || printf 'replicaof 127.0.0.1 %s\n' "$of"
        } >"$dir/redis.conf"
        role=${of:+ (a replica of $of)}
    fi
    say "starting redis-server on 127.0.0.1:$port$role"
    redis-server "$dir/redis.conf" --daemonize yes --pidfile "$RUN_DIR/vorchd-redis-$port.pid" \
        --logfile "$LOG_DIR/redis-$port.log" </dev/null || die "redis-server failed to start"
    retry 40 0.25 local_redis_ping "$port" ||
        die "redis-server on port $port does not answer (log: $LOG_DIR/redis-$port.log)"
}

# One Sentinel of the HA example on loopback port $1, from etc/ha/sentinel.conf (written
# once: Sentinel rewrites it as it learns).
ha_sentinel() {
    local port=$1 dir=$HA_DIR/sentinel-$1
    if local_redis_ping "$port"; then
        say "Sentinel on 127.0.0.1:$port answers; leaving it as it is"
        return 0
    fi
    mkdir -p "$dir"
    chmod 0750 "$dir"
    if [[ ! -e $dir/sentinel.conf ]]; then
        sed -e "s|@PORT@|$port|g" -e "s|@BIND@|127.0.0.1|g" -e "s|@DIR@|$dir|g" \
            -e "s|@MASTER_NAME@|$HA_MASTER_NAME|g" -e "s|@MASTER_HOST@|127.0.0.1|g" \
            -e "s|@MASTER_PORT@|${HA_REDIS_PORTS[0]}|g" -e "s|@QUORUM@|2|g" \
            -e "s|@DOWN_AFTER_MS@|1000|g" "$REPO/etc/ha/sentinel.conf" >"$dir/sentinel.conf"
    fi
    say "starting redis-sentinel on 127.0.0.1:$port"
    redis-sentinel "$dir/sentinel.conf" --daemonize yes \
        --pidfile "$RUN_DIR/vorchd-sentinel-$port.pid" --logfile "$LOG_DIR/sentinel-$port.log" \
        </dev/null || die "redis-sentinel failed to start"
    retry 40 0.25 local_redis_ping "$port" ||
        die "redis-sentinel on port $port does not answer (log: $LOG_DIR/sentinel-$port.log)"
}

# Wait (up to 30 s) until the master the Sentinels name has a replica online: until then
# every create fails, as no replica can confirm it (a restarted Redis takes a few seconds
# to be made a replica again and to sync).
ha_wait_replica() {
    local i addr
    SENTINEL_MASTER=$HA_MASTER_NAME SENTINELS=""
    for i in "${HA_SENTINEL_PORTS[@]}"; do SENTINELS+="127.0.0.1:$i "; done
    for ((i = 0; i < 60; i++)); do
        if addr=$(sentinel_master_addr) &&
            timeout 5 redis-cli -h "${addr%:*}" -p "${addr##*:}" info replication 2>/dev/null |
            grep -q '^slave[0-9]*:.*state=online'; then
            say "Redis master $addr has a replica online"
            return 0
        fi
        sleep 0.5
    done
    warn "no replica of the Redis master is online yet: creates fail until one is"
}

# The example's Sentinel URL.
ha_url() {
    local s hosts=()
    for s in "${HA_SENTINEL_PORTS[@]}"; do hosts+=("127.0.0.1:$s"); done
    local IFS=,
    printf 'redis+sentinel://%s/%s/0\n' "${hosts[*]}" "$HA_MASTER_NAME"
}

# HAProxy on the REST port $1 (interface $2, empty: every address) in front of the
# example's daemons, from etc/ha/haproxy.cfg; reloaded without dropping connections if
# it runs.
ha_haproxy() {
    local port=$1 interface=$2 cfg=$HA_DIR/haproxy.cfg pidfile=$RUN_DIR/vorchd-haproxy-$1.pid
    local servers="" i old=""
    for i in "${!HA_DAEMON_PORTS[@]}"; do
        servers+="    server vorchd$((i + 1)) 127.0.0.1:${HA_DAEMON_PORTS[i]} check"$'\n'
    done
    mkdir -p "$HA_DIR"
    "$VENV/bin/python" - "$REPO/etc/ha/haproxy.cfg" "$cfg" "$interface:$port" \
        "127.0.0.1:$HA_STATS_PORT" "${servers%$'\n'}" <<'PY'
import sys
src, dst, bind, stats, servers = sys.argv[1:]
text = open(src).read().replace("@BIND@", bind).replace("@STATS_BIND@", stats)
open(dst, "w").write(text.replace("@SERVERS@", servers))
PY
    haproxy -c -q -f "$cfg" || die "HAProxy rejects $cfg"
    if [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        old=$(cat "$pidfile")
    else
        stop_daemon "$port" # a lone vorchd on the REST port gives it up to HAProxy
        port_busy "$port" && die "port $port is in use by another program"
    fi
    say "${old:+re}starting HAProxy on port $port in front of ports ${HA_DAEMON_PORTS[*]}"
    haproxy -D -p "$pidfile" -f "$cfg" ${old:+-sf "$old"} </dev/null || die "HAProxy did not start"
    local url="http://127.0.0.1:$port" body
    for ((i = 0; i < 40; i++)); do
        body=$(curl -fsS --max-time 5 "$url/pm/list" 2>/dev/null || true)
        if [[ $body == '{"pmids"'* ]]; then
            say "HAProxy answers: $url/pm/list -> $body"
            say "daemons' state: curl 'http://127.0.0.1:$HA_STATS_PORT/stats;csv'"
            return 0
        fi
        sleep 0.5
    done
    die "HAProxy on port $port does not answer $url/pm/list"
}

# ./install.sh ha [PM_FILE IMAGE_FILE FLAVOR_FILE]: the highly available example on this
# machine (README, "Running highly available"); rerunning it restarts the daemons.
cmd_ha() {
    local pm image flavor i front interface url ini=$HA_DIR/vorchd.ini
    [[ -r $CONFIG ]] || die "config $CONFIG does not exist or is not readable"
    deps
    apt_install "${HA_PACKAGES[@]}"
    make_dirs
    if [[ $# -eq 3 ]]; then
        pm=$(input_file pm_file "$1") image=$(input_file image_file "$2")
        flavor=$(input_file flavor_file "$3")
    else
        build_example_image
        pm=$REPO/etc/example/pm_file image=$REPO/etc/example/image_file
        flavor=$REPO/etc/example/flavor_file
    fi
    read_settings
    front=$PORT interface=$INTERFACE
    mkdir -p "$HA_DIR"
    ha_redis_node "${HA_REDIS_PORTS[0]}"
    for ((i = 1; i < ${#HA_REDIS_PORTS[@]}; i++)); do
        ha_redis_node "${HA_REDIS_PORTS[i]}" "${HA_REDIS_PORTS[0]}"
    done
    for i in "${HA_SENTINEL_PORTS[@]}"; do ha_sentinel "$i"; done
    ha_wait_replica
    url=$(ha_url)
    # The daemons' ini: a copy of the one given (relative paths in it are relative to
    # $HA_DIR now), with changes acknowledged by a replica.
    if grep -q '^min_replicas_acked *=' "$CONFIG"; then
        sed -e 's/^min_replicas_acked *=.*/min_replicas_acked = 1/' "$CONFIG" >"$ini"
    elif grep -q '^\[redis\]' "$CONFIG"; then
        sed -e '/^\[redis\]/a min_replicas_acked = 1' "$CONFIG" >"$ini"
    else
        { cat "$CONFIG" && printf '\n[redis]\nmin_replicas_acked = 1\n'; } >"$ini"
    fi
    for i in "${HA_DAEMON_PORTS[@]}"; do
        (
            export VORCHD_PORT=$i VORCHD_REDIS=$url
            CONFIG=$ini
            run_daemon "$pm" "$image" "$flavor"
        )
    done
    ha_haproxy "$front" "$interface"
    say "highly available example up: REST on port $front (HAProxy), daemons on ports" \
        "${HA_DAEMON_PORTS[*]}, Redis ${HA_REDIS_PORTS[*]}, Sentinels ${HA_SENTINEL_PORTS[*]}"
    say "VORCHD_REDIS=$url"
    say "stop it all (state kept): ./install.sh ha stop"
}

# ./install.sh ha stop: HAProxy, the daemons, the Sentinels and the Redis servers of the
# example, in that order; their data is kept.
cmd_ha_stop() {
    local port pidfile
    read_settings
    pidfile=$RUN_DIR/vorchd-haproxy-$PORT.pid
    if [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        say "stopping HAProxy on port $PORT"
        kill -TERM "$(cat "$pidfile")" || true
    fi
    rm -f "$pidfile"
    for port in "${HA_DAEMON_PORTS[@]}"; do stop_daemon "$port"; done
    for port in "${HA_SENTINEL_PORTS[@]}"; do
        redis-cli -p "$port" shutdown >/dev/null 2>&1 && say "Sentinel on port $port stopped"
    done
    for port in "${HA_REDIS_PORTS[@]}"; do
        redis-cli -p "$port" shutdown >/dev/null 2>&1 && say "Redis on port $port stopped"
    done
    return 0
}

# ---------------------------------------------------------------------------------------
# ./install.sh ceph: a one-node Ceph on this machine, and the daemon's volumes on it

# What it needs besides the daemon's packages: Debian's Ceph (a monitor, a manager, an
# OSD and the CLIs), QEMU's RBD driver, and libvirt's RBD storage pool backend.
CEPH_PACKAGES=(ceph-mon ceph-mgr ceph-osd ceph-common qemu-block-extra
    libvirt-daemon-driver-storage-rbd)
# Everything of the cluster (conf, keys, the OSD's 10 GiB sparse file, pid files, logs)
# and the daemon's ini copy live here; a rerun finds the cluster by its pid files.
CEPH_DIR=${VORCHD_CEPH_DIR:-$STATE_DIR/ceph}
# The monitor's port when the cluster is made (Ceph's own; a free one if it is taken);
# the cluster keeps it from then on, and its restarts check it is still free.
CEPH_PORT=${VORCHD_CEPH_PORT:-6789}
CEPH_POOL=vorchd
CEPH_USER=vorchd

ceph_cli() { (cd "$REPO" && "$VENV/bin/python" -m vorchd.cephlocal_cli "$@"); }

# Sets CEPH_STATE (made, started, running or stopped), CEPH_MONITOR, CEPH_KEYRING,
# CEPH_CLIENT_CONF and CEPH_CONF from vorchd.cephlocal_cli's key=value lines in $1.
read_ceph_settings() {
    local line
    while IFS= read -r line; do
        case $line in
        state=*) CEPH_STATE=${line#state=} ;;
        monitor=*) CEPH_MONITOR=${line#monitor=} ;;
        keyring=*) CEPH_KEYRING=${line#keyring=} ;;
        client_conf=*) CEPH_CLIENT_CONF=${line#client_conf=} ;;
        conf=*) CEPH_CONF=${line#conf=} ;;
        esac
    done <<<"$1"
}

# libvirtd loads its storage backends when it starts: one started before the RBD backend
# was installed must be restarted (its guests keep running).
ensure_rbd_backend() {
    local caps
    caps=$(virsh -c qemu:///system pool-capabilities 2>/dev/null || true)
    [[ $caps == *"type='rbd' supported='yes'"* ]] && return 0
    say "libvirtd has no RBD storage backend loaded: restarting it"
    if have_systemd; then
        systemctl restart libvirtd >/dev/null 2>&1 || die "systemctl restart libvirtd failed"
    else
        local pid
        pid=$(tr -dc 0-9 </run/libvirtd.pid 2>/dev/null || true)
        if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid"
            retry 80 0.25 pid_gone "$pid" || die "libvirtd (pid $pid) did not stop"
        fi
    fi
    start_libvirtd
    caps=$(virsh -c qemu:///system pool-capabilities 2>/dev/null || true)
    [[ $caps == *"type='rbd' supported='yes'"* ]] ||
        die "libvirtd has no RBD storage backend (is libvirt-daemon-driver-storage-rbd installed?)"
}

# The cluster in $CEPH_DIR made, started again, or found running.
ceph_up() {
    local out rc=0
    mkdir -p "$CEPH_DIR"
    if ! out=$(ceph_cli status --dir "$CEPH_DIR" --pool "$CEPH_POOL" --user "$CEPH_USER" \
        2>/dev/null </dev/null); then
        say "starting the one-node Ceph in $CEPH_DIR (about 15 s)"
    fi
    out=$(ceph_cli up --dir "$CEPH_DIR" --port "$CEPH_PORT" --pool "$CEPH_POOL" \
        --user "$CEPH_USER" 2>&1 </dev/null) || rc=$?
    if [[ $rc -ne 0 ]]; then
        printf '%s\n' "$out" | tail -n 5 | sed 's/^/install.sh: ceph: /' >&2
        die "Ceph did not start (its logs: $CEPH_DIR/log; stop what runs: ./install.sh ceph stop)"
    fi
    read_ceph_settings "$out"
    case $CEPH_STATE in
    made) say "made a one-node Ceph (monitor $CEPH_MONITOR, pool $CEPH_POOL, client.$CEPH_USER) in $CEPH_DIR" ;;
    started) say "started the one-node Ceph in $CEPH_DIR again (monitor $CEPH_MONITOR, its data kept)" ;;
    *) say "the one-node Ceph in $CEPH_DIR is running (monitor $CEPH_MONITOR); leaving it as it is" ;;
    esac
}

# The daemon's ini: a copy of $CONFIG (relative paths in it are relative to $CEPH_DIR
# now) with its [volumes] on the cluster.
ceph_ini() {
    CEPH_INI=$CEPH_DIR/vorchd.ini
    ceph_cli ini --config "$CONFIG" --out "$CEPH_INI" --monitor "$CEPH_MONITOR" \
        --pool "$CEPH_POOL" --user "$CEPH_USER" --keyring "$CEPH_KEYRING" \
        --client-conf "$CEPH_CLIENT_CONF" </dev/null || die "cannot write $CEPH_INI"
    say "wrote $CEPH_INI: $CONFIG with [volumes] backend = rbd on that cluster"
}

# Everything of ./install.sh ceph once the packages are there: the cluster, the ini, the
# daemon (re)started with it.
ceph_run() {
    local pm=$1 image=$2 flavor=$3 url
    ceph_up
    ceph_ini
    (
        CONFIG=$CEPH_INI
        run_daemon "$pm" "$image" "$flavor"
    )
    CONFIG=$CEPH_INI read_settings
    url="http://$(api_host):$PORT"
    say "volumes are RBD images in Ceph pool $CEPH_POOL:"
    say "      curl '$url/volume/create?name=data&size=1'"
    say "      rbd --conf $CEPH_CONF --id $CEPH_USER --keyring $CEPH_KEYRING --pool $CEPH_POOL ls"
    say "stop the daemon and Ceph (data kept in $CEPH_DIR): ./install.sh ceph stop"
    say "rerun ./install.sh ceph to start both again; to remove Ceph's data, stop, then rm -rf $CEPH_DIR"
}

cmd_ceph() {
    local pm image flavor
    [[ -r $CONFIG ]] || die "config $CONFIG does not exist or is not readable"
    if [[ $# -eq 3 ]]; then
        pm=$(input_file pm_file "$1") image=$(input_file image_file "$2")
        flavor=$(input_file flavor_file "$3")
    fi
    deps
    apt_install "${CEPH_PACKAGES[@]}"
    ensure_rbd_backend
    make_dirs
    if [[ $# -eq 0 ]]; then
        say "the bundled example, its volumes on Ceph"
        build_example_image
        ensure_example_network
        NETWORK_OVERRIDE=$EXAMPLE_NETWORK
        EXAMPLE_RUN=1
        pm=$REPO/etc/example/pm_file image=$REPO/etc/example/image_file
        flavor=$REPO/etc/example/flavor_file
    fi
    ceph_run "$pm" "$image" "$flavor"
}

# ./install.sh ceph stop: the daemon started with the cluster's ini, then the cluster;
# their data is kept.
cmd_ceph_stop() {
    local out
    if [[ -r $CEPH_DIR/vorchd.ini ]] && venv_python_ok && config_cli --help >/dev/null 2>&1; then
        CONFIG=$CEPH_DIR/vorchd.ini read_settings
        stop_daemon "$PORT"
    else
        say "no $CEPH_DIR/vorchd.ini: no daemon of ./install.sh ceph to stop"
    fi
    if ! venv_python_ok; then
        say "no venv $VENV: nothing of ./install.sh ceph can be running"
        return 0
    fi
    out=$(ceph_cli down --dir "$CEPH_DIR" --pool "$CEPH_POOL" --user "$CEPH_USER" 2>&1 </dev/null) ||
        die "cannot stop Ceph in $CEPH_DIR: $out"
    if [[ $out == stopped= ]]; then
        say "no Ceph running in $CEPH_DIR"
    else
        say "Ceph in $CEPH_DIR stopped (${out#stopped=}); its data is kept: ./install.sh ceph starts it again"
    fi
}

# ---------------------------------------------------------------------------------------
# the daemon

pidfile_for() { printf '%s/vorchd-%s.pid' "$RUN_DIR" "$1"; }
logfile_for() { printf '%s/vorchd-%s.log' "$LOG_DIR" "$1"; }

# The pid in a pid file if that process is alive and is a vorchd twistd.
daemon_pid() {
    local pidfile=$1 pid
    [[ -f $pidfile ]] || return 1
    pid=$(tr -dc 0-9 <"$pidfile" 2>/dev/null || true)
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'twistd.*vorchd' || return 1
    printf '%s\n' "$pid"
}

stop_daemon() {
    local port=$1 pidfile pid
    pidfile=$(pidfile_for "$port")
    if ! pid=$(daemon_pid "$pidfile"); then
        if [[ -f $pidfile ]]; then
            rm -f "$pidfile"
            say "no vorchd running on port $port (removed the stale $pidfile)"
        else
            say "no vorchd running on port $port"
        fi
        return 0
    fi
    say "stopping vorchd on port $port (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! retry $((STOP_SECONDS * 4)) 0.25 pid_gone "$pid"; then
        warn "vorchd (pid $pid) still running after ${STOP_SECONDS}s: killing it"
        kill -KILL "$pid" 2>/dev/null || true
        retry 20 0.25 pid_gone "$pid" || true
    fi
    rm -f "$pidfile"
    say "vorchd on port $port stopped"
}

# No process $1 any more.
pid_gone() { ! kill -0 "$1" 2>/dev/null; }

# Someone accepts connections on the port.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Make a path absolute (relative to the caller's cwd) and check it is a readable file.
input_file() {
    local what=$1 path=$2
    [[ -n $path ]] || die "$what: empty path"
    [[ $path == /* ]] || path=$CALLER_PWD/$path
    [[ -e $path ]] || die "$what $path does not exist"
    [[ -d $path ]] && die "$what $path is a directory, not a file"
    [[ -r $path ]] || die "$what $path is not readable"
    printf '%s\n' "$path"
}

make_dirs() {
    mkdir -p "$STATE_DIR" "$POOL_DIR" "$LOG_DIR" "$RUN_DIR"
    chmod 0755 "$STATE_DIR" "$LOG_DIR"
    chmod 0711 "$POOL_DIR"
}

# A kernel package for the example, if /boot has no kernel (a container, say).
example_kernel() {
    compgen -G '/boot/vmlinuz-*' >/dev/null && return 0
    local pkg
    for pkg in linux-image-amd64 linux-image-generic; do
        if apt-cache show "$pkg" >/dev/null 2>&1; then
            printf '%s\n' "$pkg"
            return 0
        fi
    done
}

# The example's image: a small Linux made here from Debian packages (no download but
# apt's): it takes an address by DHCP, prints it on its console, and serves a page.
build_example_image() {
    local kernel
    kernel=$(example_kernel)
    apt_install "${EXAMPLE_PACKAGES[@]}" ${kernel:+"$kernel"}
    mkdir -p "$IMAGE_DIR"
    chmod 0755 "$STATE_DIR" "$IMAGE_DIR"
    local tmp=$IMAGE_DIR/.vorchd-linux.img.new
    (cd "$REPO" && "$VENV/bin/python" -m vorchd.linuximage "$tmp" >/dev/null) ||
        die "cannot build the example image"
    # Replace it only when it changed: a rerun leaves the image the daemon uses alone.
    if cmp -s "$tmp" "$EXAMPLE_IMAGE"; then
        rm -f "$tmp"
        say "example image $EXAMPLE_IMAGE is up to date"
    else
        mv -f "$tmp" "$EXAMPLE_IMAGE"
        say "built the example image $EXAMPLE_IMAGE"
    fi
    chmod 0644 "$EXAMPLE_IMAGE"
}

api_host() {
    case ${INTERFACE:-} in
    "" | 0.0.0.0 | "::") printf '127.0.0.1' ;;
    *) printf '%s' "$INTERFACE" ;;
    esac
}

# The twistd plugin's arguments for the three input files. The daemon reads Redis' address
# from the same ini and VORCHD_REDIS (in its environment) as read_settings did.
set_daemon_args() {
    DAEMON_ARGS=(vorchd --config "$CONFIG" --port "$PORT"
        --pm-file "$1" --image-file "$2" --flavor-file "$3")
    if [[ -n ${NETWORK_OVERRIDE:-} ]]; then
        DAEMON_ARGS+=(--network "$NETWORK_OVERRIDE")
    fi
}

# libvirt's default network on this machine, defined (from the package's file) if it is
# missing, started, and started at boot: the example's VMs get their addresses from it.
ensure_example_network() {
    local virsh=(virsh -q -c qemu:///system) xml=/usr/share/libvirt/networks/default.xml
    if ! "${virsh[@]}" net-info "$EXAMPLE_NETWORK" >/dev/null 2>&1; then
        [[ -r $xml ]] || die "libvirt has no network $EXAMPLE_NETWORK and there is no $xml"
        "${virsh[@]}" net-define "$xml" >/dev/null ||
            die "cannot define libvirt's network $EXAMPLE_NETWORK"
    fi
    "${virsh[@]}" net-autostart "$EXAMPLE_NETWORK" >/dev/null 2>&1 || true
    if ! "${virsh[@]}" net-info "$EXAMPLE_NETWORK" 2>/dev/null | grep -Eq '^Active: +yes'; then
        "${virsh[@]}" net-start "$EXAMPLE_NETWORK" >/dev/null ||
            die "cannot start libvirt's network $EXAMPLE_NETWORK (is dnsmasq-base installed?)"
    fi
    say "the example's VMs attach to libvirt's network $EXAMPLE_NETWORK"
}

# Parse the settings and the three files exactly as the daemon will (its own Options), so
# a malformed file stops us here, before anything (Redis, the running daemon) is touched.
check_inputs() {
    local out rc=0
    out=$(config_cli check "${DAEMON_ARGS[@]:1}" 2>&1 </dev/null) || rc=$?
    if [[ $rc -ne 0 ]]; then
        printf '%s\n' "$out" | tail -n 5 | sed 's/^/install.sh: /' >&2
        die "vorchd was not (re)started: fix the input above (nothing was changed)"
    fi
}

start_daemon() {
    local pidfile logfile out rc
    pidfile=$(pidfile_for "$PORT")
    logfile=$(logfile_for "$PORT")

    stop_daemon "$PORT"
    if port_busy "$PORT"; then
        die "port $PORT is in use by another program (not a vorchd started by install.sh)"
    fi

    local cmd=("$VENV/bin/twistd" --pidfile "$pidfile" --logfile "$logfile" "${DAEMON_ARGS[@]}")
    say "starting vorchd on port $PORT (log: $logfile)"
    rc=0
    out=$(cd "$REPO" && "${cmd[@]}" 2>&1 </dev/null) || rc=$?
    if [[ $rc -ne 0 ]]; then
        # On an option error twistd prints its whole usage text, then
        # "<argv[0]> <argv[1]>: <reason>": show the reason only.
        local prefix="${cmd[0]} ${cmd[1]}: " line shown=
        while IFS= read -r line; do
            if [[ $line == "$prefix"* ]]; then
                printf 'install.sh: vorchd: %s\n' "${line#"$prefix"}" >&2
                shown=1
            fi
        done <<<"$out"
        if [[ -z $shown ]]; then
            printf '%s\n' "$out" | tail -n 15 | sed 's/^/install.sh: twistd: /' >&2
        fi
        die "vorchd did not start (twistd exit $rc)"
    fi

    local host url pid="" body i
    host=$(api_host)
    url="http://$host:$PORT"
    say "waiting up to ${WAIT_SECONDS}s for the REST API at $url"
    for ((i = 0; i < WAIT_SECONDS * 2; i++)); do
        body=$(curl -fsS --max-time 5 "$url/pm/list" 2>/dev/null || true)
        if [[ $body == '{"pmids"'* ]]; then
            pid=$(daemon_pid "$pidfile" || true)
            say "vorchd is up (pid ${pid:-?}) and answering: $url/pm/list -> $body"
            say "REST API: $url/   dashboard: $url/ui/   metrics: $url/metrics"
            say "log: $logfile   pid file: $pidfile"
            say "try:  curl '$url/vm/types'"
            say "      curl '$url/image/list'"
            say "      curl '$url/vm/create?name=test&instance_type=1&image_id=1'"
            if [[ -n ${EXAMPLE_RUN:-} ]]; then
                say "then, once it has booted (20 s or so), its address and its page:"
                say "      vorch --url $url vm show VMID"
                say "      curl http://ADDRESS/"
            fi
            say "stop: VORCHD_PORT=$PORT ./install.sh stop"
            return 0
        fi
        if ((i >= 4)) && ! daemon_pid "$pidfile" >/dev/null; then
            printf 'install.sh: last 40 lines of %s:\n' "$logfile" >&2
            tail -n 40 "$logfile" >&2 2>/dev/null || true
            die "vorchd exited before its REST API answered"
        fi
        sleep 0.5
    done
    printf 'install.sh: last 40 lines of %s:\n' "$logfile" >&2
    tail -n 40 "$logfile" >&2 2>/dev/null || true
    die "vorchd's REST API did not answer at $url/pm/list within ${WAIT_SECONDS}s" \
        "(pid ${pid:-$(daemon_pid "$pidfile" || echo none)} left running; stop it with ./install.sh stop)"
}

# ---------------------------------------------------------------------------------------
# commands

CALLER_PWD=$PWD
CONFIG=${VORCHD_CONFIG:-$REPO/etc/vorchd.ini}
[[ $CONFIG == /* ]] || CONFIG=$CALLER_PWD/$CONFIG

# The admin port's password file: made once with a random password (no default password
# ever works), readable by root alone. vorchd-admin reads it when run as root here.
ensure_admin_passwd() {
    [[ -n $ADMIN_PORT ]] || return 0
    local file=$ADMIN_PASSWD_FILE
    if [[ ! -e $file ]]; then
        mkdir -p "$(dirname "$file")"
        (
            umask 077
            printf 'admin:%s\n' "$(head -c 18 /dev/urandom | base64 | tr -d '/+=')" >"$file"
        )
        say "admin password made in $file (user admin); vorchd-admin reads it"
    fi
    chmod 600 "$file"
}

# Start the daemon with three input files (already made absolute and checked).
run_daemon() {
    read_settings
    set_daemon_args "$1" "$2" "$3"
    ensure_admin_passwd
    check_inputs
    make_dirs
    ensure_redis
    start_daemon
}

cmd_run() {
    local pm image flavor
    pm=$(input_file pm_file "$1")
    image=$(input_file image_file "$2")
    flavor=$(input_file flavor_file "$3")
    [[ -r $CONFIG ]] || die "config $CONFIG does not exist or is not readable"
    deps
    run_daemon "$pm" "$image" "$flavor"
}

cmd_example() {
    [[ -r $CONFIG ]] || die "config $CONFIG does not exist or is not readable"
    say "running the bundled example: this machine's hypervisor and a small Linux"
    deps
    make_dirs
    build_example_image
    ensure_example_network
    NETWORK_OVERRIDE=$EXAMPLE_NETWORK
    EXAMPLE_RUN=1
    run_daemon "$REPO/etc/example/pm_file" "$REPO/etc/example/image_file" \
        "$REPO/etc/example/flavor_file"
}

cmd_stop() {
    if [[ -r $CONFIG ]] && venv_python_ok && config_cli --help >/dev/null 2>&1; then
        read_settings
    else
        read_port_fallback
    fi
    stop_daemon "$PORT"
}

# Only the tests need an sshd (they start their own on loopback, to serve remote images),
# a browser with its driver (the dashboard is tested in headless Chromium), Ceph with
# libvirt's RBD storage backend (the rbd volume tests start a one-node cluster of their
# own), and the HA tests' real Sentinels and HAProxy.
TEST_PACKAGES=(openssh-server chromium chromium-driver "${CEPH_PACKAGES[@]}" "${HA_PACKAGES[@]}")

cmd_test() {
    deps
    apt_install "${TEST_PACKAGES[@]}"
    say "running the test suite: pytest -q $*"
    unset VORCHD_ALLOW_MISSING   # every real part must run here: none may be skipped
    local rc=0
    (cd "$REPO" && "$VENV/bin/python" -m pytest -q "$@" </dev/null) || rc=$?
    case $rc in
    0) say "tests passed" ;;
    5) say "pytest collected no tests: that is a failure" ;;
    *) say "tests failed (pytest exit $rc)" ;;
    esac
    exit "$rc"
}

main() {
    case ${1-} in
    -h | --help | help)
        usage
        exit 0
        ;;
    esac
    ensure_root "$@"
    if [[ $# -eq 0 ]]; then
        cmd_example
        return
    fi
    case $1 in
    stop)
        [[ $# -eq 1 ]] || die "stop takes no arguments"
        cmd_stop
        ;;
    deps)
        [[ $# -eq 1 ]] || die "deps takes no arguments"
        deps
        say "dependencies are ready (venv: $VENV)"
        ;;
    test)
        shift
        cmd_test "$@"
        ;;
    ha)
        shift
        if [[ ${1-} == stop ]]; then
            [[ $# -eq 1 ]] || die "ha stop takes no arguments"
            cmd_ha_stop
        else
            [[ $# -eq 0 || $# -eq 3 ]] || die "ha takes PM_FILE IMAGE_FILE FLAVOR_FILE, or none"
            cmd_ha "$@"
        fi
        ;;
    ceph)
        shift
        if [[ ${1-} == stop ]]; then
            [[ $# -eq 1 ]] || die "ceph stop takes no arguments"
            cmd_ceph_stop
        else
            [[ $# -eq 0 || $# -eq 3 ]] || die "ceph takes PM_FILE IMAGE_FILE FLAVOR_FILE, or none"
            cmd_ceph "$@"
        fi
        ;;
    *)
        if [[ $# -ne 3 ]]; then
            usage >&2
            die "expected PM_FILE IMAGE_FILE FLAVOR_FILE, or stop, deps, test, ha, ceph"
        fi
        cmd_run "$1" "$2" "$3"
        ;;
    esac
}

# Sourced (the tests call ceph_run and others), it defines its functions and runs nothing.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
