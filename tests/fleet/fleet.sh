#!/usr/bin/env bash
# tests/fleet/fleet.sh -- SSH test fleet harness for continuum's tests.
#
# THIS IS A TEST HARNESS, NOT A PRODUCT COMPONENT. It emulates Linux hosts on one
# machine so tests can point continuum at real sshd servers:
#
#   host = network namespace (veth pair to bridge $FLEET_BRIDGE, 10.250.0.0/24)
#          + unshare --uts --mount --pid (own hostname, own mounts, own PID 1)
#          + overlay mount of a cached Debian bookworm rootfs (per-host upper dir)
#          + proc/sys/dev/devpts + tmpfs /run and /tmp, chroot, /usr/sbin/sshd -D
#
# Must run as root on Linux (no Docker needed). See tests/fleet/README.md and
# `fleet.sh help`. Hosts outlive this script; `fleet.sh down-all` cleans up.
set -euo pipefail

# ----------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------
FLEET_CACHE=${FLEET_CACHE:-/var/cache/continuum-fleet}
FLEET_RUN=${FLEET_RUN:-/run/cfleet}
FLEET_BRIDGE=${FLEET_BRIDGE:-cfleet0}
FLEET_MIRROR=${FLEET_MIRROR:-http://deb.debian.org/debian}
FLEET_UP_TIMEOUT=${FLEET_UP_TIMEOUT:-20}
# Host key types each host generates at first start (and on rekey). RSA would cost
# ~1 s of CPU per host; ed25519 is what OpenSSH clients prefer anyway.
FLEET_HOST_KEY_TYPES=${FLEET_HOST_KEY_TYPES:-ed25519}

NET_PREFIX=10.250.0            # the fleet uses 10.250.0.0/24 and nothing else
BRIDGE_IP=$NET_PREFIX.1
NETNS_PREFIX=cfleet-           # netns name = cfleet-NAME
VETH_PREFIX=cfv                # host-side veth = cfv + 8 hex of sha1(NAME)
SUITE=bookworm
# Bump ROOTFS_VERSION whenever ROOTFS_PACKAGES or prepare_rootfs() change:
# the cache directory name changes, so a stale rootfs is never reused.
ROOTFS_VERSION=v1
ROOTFS_PACKAGES=openssh-server,sudo,iproute2,ca-certificates,curl,python3,python3-yaml,openssl,procps
# Host architecture: amd64 (native) or arm64 (Raspberry Pi / Jetson stand-ins, run by
# qemu-aarch64-static through binfmt_misc: `fleet.sh binfmt on`). A host keeps the
# architecture it was first started with ($FLEET_RUN/NAME/arch).
set_arch() {
    case $1 in amd64 | arm64) ;; *) die "FLEET_ARCH must be amd64 or arm64, not '$1'" ;; esac
    ARCH=$1
    ROOTFS_DIR=$FLEET_CACHE/rootfs-$SUITE-$ARCH-$ROOTFS_VERSION
}
BINFMT_DIR=/proc/sys/fs/binfmt_misc
BINFMT_NAME=qemu-aarch64

SAFE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
SELF=$(readlink -f "${BASH_SOURCE[0]}")
DOUBLES_DIR=$(dirname "$SELF")/doubles

usage() {
    cat <<EOF
fleet.sh -- SSH test fleet harness (emulated hosts for continuum tests; not a product part)

usage: fleet.sh COMMAND [ARGS]

  deps                     apt-get install the controller-side tools if missing
  rootfs [amd64|arm64]     build/cache the base rootfs once; prints its path (arm64
                           needs `binfmt on`; takes minutes under emulation)
  binfmt on|off|status     register qemu-aarch64 in binfmt_misc (machine-wide) / remove
                           it again (only when the fleet registered it; down-all too)
  key                      create the client keypair once; prints the private key path
  up NAME IP               start (or restart) host NAME at IP (10.250.0.2-254);
                           FLEET_ARCH=arm64 makes a new host an emulated arm64 one
  up-n PREFIX N FIRST      start PREFIX1..PREFIXN at 10.250.0.FIRST.. in parallel
  stop NAME                kill the host (all its processes); keep its disk and network
  cut NAME | uncut NAME    set the host's link down / up (network partition)
  shape NAME RATE|off      limit what the controller sends to the host (tc tbf, e.g. 64kbit)
  rekey NAME               new SSH host keys + sshd restart
  exec NAME -- CMD...      run CMD inside the host (as root), pass through exit code
  ssh [USER@]NAME -- CMD   ssh into the host with the client key (throwaway known_hosts)
  down NAME                stop and delete the host (netns, veth, disk)
  down-all                 delete every host, the bridge and \$FLEET_RUN
  list                     one line per host: NAME IP running|stopped
  password NAME USER       a "fresh device image": set USER's password (read from
                           stdin), remove USER's authorized_keys, allow password logins
  service NAME systemd|openrc|none
                           the host's service manager (TEST DOUBLES, see "Service
                           managers" below); a new host starts with systemd
  persona NAME pi|jetson [K=V...]
                           make a running host look like a Raspberry Pi or a Jetson
                           (TEST DOUBLES of device firmware; see "Personas" below):
                           pi:     cmdline=ok|stuck  iptables=VERSION  model=TEXT
                           jetson: toolkit=yes|no  l4t=R35:4.1  model=TEXT

settings (env): FLEET_CACHE=$FLEET_CACHE FLEET_RUN=$FLEET_RUN FLEET_BRIDGE=$FLEET_BRIDGE
                FLEET_MIRROR=$FLEET_MIRROR FLEET_UP_TIMEOUT=$FLEET_UP_TIMEOUT
                FLEET_HOST_KEY_TYPES="$FLEET_HOST_KEY_TYPES"
EOF
}

# ----------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------
log() { printf 'fleet: %s\n' "$*" >&2; }
die() { printf 'fleet: error: %s\n' "$*" >&2; exit 1; }

need_root() { [ "$(id -u)" -eq 0 ] || die "must run as root"; }

check_name() {
    [[ $1 =~ ^[a-z][a-z0-9-]{0,39}$ ]] ||
        die "bad host name '$1' (want [a-z][a-z0-9-]*, at most 40 chars)"
}

check_ip() {
    local ip=$1 last
    [[ $ip =~ ^10\.250\.0\.([0-9]{1,3})$ ]] || die "IP '$ip' is not inside $NET_PREFIX.0/24"
    last=${BASH_REMATCH[1]}
    ((10#$last >= 2 && 10#$last <= 254)) || die "IP '$ip': last octet must be 2..254"
}

hostdir() { printf '%s/%s' "$FLEET_RUN" "$1"; }
netns_of() { printf '%s%s' "$NETNS_PREFIX" "$1"; }
veth_of() { printf '%s%s' "$VETH_PREFIX" "$(printf '%s' "$1" | sha1sum | cut -c1-8)"; }

# Run "$@" while holding an exclusive flock on file $1 (fd 9 is closed for children
# that we start in the background, so a long-lived host never keeps a lock).
with_lock() {
    local lockfile=$1; shift
    mkdir -p "$(dirname "$lockfile")"
    (
        flock -w 120 9 || die "timeout waiting for lock $lockfile"
        "$@"
    ) 9>"$lockfile"
}

# PID (host view) of the host's namespace init if it is running, else fail.
running_pid() {
    local h pid cmd
    h=$(hostdir "$1")
    [ -s "$h/pid" ] || return 1
    pid=$(<"$h/pid")
    [ -r "/proc/$pid/cmdline" ] || return 1
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    # a zombie has an empty cmdline; a recycled PID has a different one
    [[ $cmd == *" __init $1 "* ]] || return 1
    printf '%s' "$pid"
}

pid_gone() { # true when PID does not exist or is a zombie
    local st
    [ -e "/proc/$1" ] || return 0
    st=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null) || return 0
    [ -z "$st" ] || [ "$st" = Z ] || [ "$st" = X ]
}

tcp_open() { timeout 1 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

# rm -rf that refuses to descend into anything still mounted
safe_rm() {
    local d=$1
    [ -n "$d" ] && [ "$d" != / ] || die "safe_rm: refusing '$d'"
    [ -e "$d" ] || return 0
    if awk -v d="$(readlink -f "$d")" '$2 == d || index($2, d "/") == 1 { f = 1 } END { exit !f }' /proc/mounts; then
        die "refusing to delete $d: something is still mounted below it (see /proc/mounts)"
    fi
    rm -rf --one-file-system "$d"
}

# ----------------------------------------------------------------------------
# deps
# ----------------------------------------------------------------------------
cmd_deps() {
    need_root
    local -A pkg_of=(
        [debootstrap]=debootstrap [ip]=iproute2 [tc]=iproute2
        [unshare]=util-linux [nsenter]=util-linux [flock]=util-linux [setsid]=util-linux
        [mount]=mount [ssh]=openssh-client [ssh-keygen]=openssh-client
        [timeout]=coreutils [sha1sum]=coreutils [gpgv]=gpgv
        [qemu-aarch64-static]=qemu-user-static
    )
    local c missing=()
    for c in "${!pkg_of[@]}"; do
        command -v "$c" >/dev/null 2>&1 || missing+=("${pkg_of[$c]}")
    done
    [ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || missing+=(debian-archive-keyring)
    if [ ${#missing[@]} -eq 0 ]; then
        log "deps: all present"
        return 0
    fi
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    log "deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || log "deps: apt-get update reported errors (continuing)"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
        die "apt-get install ${missing[*]} failed"
}

# ----------------------------------------------------------------------------
# rootfs
# ----------------------------------------------------------------------------
prepare_rootfs() { # $1 = freshly debootstrapped dir
    local r=$1 u
    rm -f "$r"/etc/ssh/ssh_host_*             # each host makes its own at first start
    for u in ops nosudo; do
        chroot "$r" /usr/sbin/useradd --create-home --shell /bin/bash "$u"
    done
    # '*' = no password, but not "locked" (sshd refuses locked accounts without PAM)
    for u in root ops nosudo; do chroot "$r" /usr/sbin/usermod -p '*' "$u"; done
    printf 'ops ALL=(ALL:ALL) NOPASSWD: ALL\n' >"$r/etc/sudoers.d/ops"
    chmod 0440 "$r/etc/sudoers.d/ops"
    chroot "$r" /usr/sbin/visudo -c -q -f /etc/sudoers.d/ops
    mkdir -p "$r/etc/fleet/boot.d"
    printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$r/etc/hosts"
    printf '# test fleet host: no DNS\n' >"$r/etc/resolv.conf"
    rm -f "$r/etc/hostname" "$r/etc/machine-id" "$r/var/lib/dbus/machine-id"
    : >"$r/etc/machine-id"
    printf 'continuum test fleet rootfs %s %s %s\npackages: %s\n' \
        "$SUITE" "$ARCH" "$ROOTFS_VERSION" "$ROOTFS_PACKAGES" >"$r/etc/fleet/rootfs-version"
    chroot "$r" /usr/bin/apt-get clean
}

build_rootfs_locked() {
    [ -d "$ROOTFS_DIR" ] && return 0
    command -v debootstrap >/dev/null || die "debootstrap missing: run 'fleet.sh deps' first"
    local d
    for d in "$FLEET_CACHE"/.build-*; do   # leftovers of an interrupted build
        [ -e "$d" ] || continue
        awk -v d="$d" 'index($2, d "/") == 1 { print $2 }' /proc/mounts | sort -r |
            while read -r m; do umount -l "$m" || true; done
        safe_rm "$d"
    done
    if [ "$ARCH" = arm64 ] && [ "$(uname -m)" != aarch64 ]; then
        binfmt_active || die "an arm64 rootfs needs qemu-aarch64 in binfmt_misc: run 'fleet.sh binfmt on'"
    fi
    local tmp t0=$SECONDS
    tmp=$(mktemp -d "$FLEET_CACHE/.build-$ARCH-$ROOTFS_VERSION.XXXXXX")
    log "rootfs: debootstrap $SUITE/$ARCH into $tmp (takes ~75 s, ~7 min for arm64 under qemu; log: $tmp.log)"
    if ! debootstrap --arch="$ARCH" --variant=minbase --include="$ROOTFS_PACKAGES" \
        "$SUITE" "$tmp" "$FLEET_MIRROR" >"$tmp.log" 2>&1; then
        tail -n 20 "$tmp.log" >&2
        die "debootstrap failed (full log: $tmp.log; build dir $tmp left for inspection)"
    fi
    prepare_rootfs "$tmp"
    mv -T "$tmp" "$ROOTFS_DIR"        # atomic: the final name only ever holds a finished rootfs
    mv "$tmp.log" "$ROOTFS_DIR.log"
    log "rootfs: ready in $((SECONDS - t0)) s: $ROOTFS_DIR ($(du -sh "$ROOTFS_DIR" | cut -f1))"
}

ensure_rootfs() {
    [ -d "$ROOTFS_DIR" ] && return 0
    mkdir -p "$FLEET_CACHE"
    with_lock "$FLEET_CACHE/.lock" build_rootfs_locked
}

cmd_rootfs() {
    need_root
    set_arch "${1:-$ARCH}"
    ensure_rootfs
    printf '%s\n' "$ROOTFS_DIR"
}

# ----------------------------------------------------------------------------
# key
# ----------------------------------------------------------------------------
make_key_locked() {
    [ -s "$FLEET_RUN/id_ed25519" ] && [ -s "$FLEET_RUN/id_ed25519.pub" ] && return 0
    rm -f "$FLEET_RUN/id_ed25519" "$FLEET_RUN/id_ed25519.pub"
    ssh-keygen -q -t ed25519 -N '' -C continuum-test-fleet -f "$FLEET_RUN/id_ed25519" </dev/null
    log "key: created $FLEET_RUN/id_ed25519"
}

ensure_key() {
    [ -s "$FLEET_RUN/id_ed25519.pub" ] && return 0
    mkdir -p "$FLEET_RUN"; chmod 0755 "$FLEET_RUN"
    with_lock "$FLEET_RUN/.lock" make_key_locked
}

cmd_key() {
    need_root
    ensure_key
    printf '%s\n' "$FLEET_RUN/id_ed25519"
}

# ----------------------------------------------------------------------------
# network (shared steps run under $FLEET_RUN/.lock)
# ----------------------------------------------------------------------------
ensure_bridge_locked() {
    if ! ip link show dev "$FLEET_BRIDGE" >/dev/null 2>&1; then
        ip link add name "$FLEET_BRIDGE" type bridge stp_state 0 forward_delay 0
        log "net: created bridge $FLEET_BRIDGE"
    fi
    ip -4 addr show dev "$FLEET_BRIDGE" | grep -q " $BRIDGE_IP/24 " ||
        ip addr add "$BRIDGE_IP/24" dev "$FLEET_BRIDGE"
    ip link set dev "$FLEET_BRIDGE" up
    # br_netfilter (built into some kernels) passes bridged frames through iptables;
    # a FORWARD policy of DROP would then cut host<->host traffic. Turn it off while
    # the fleet exists; down-all restores the saved values.
    local k f v
    for k in iptables ip6tables arptables; do
        f=/proc/sys/net/bridge/bridge-nf-call-$k
        [ -w "$f" ] || continue
        v=$(<"$f")
        [ "$v" = 0 ] && continue
        grep -q "^$k=" "$FLEET_RUN/.sysctl-saved" 2>/dev/null ||
            printf '%s=%s\n' "$k" "$v" >>"$FLEET_RUN/.sysctl-saved"
        echo 0 >"$f"
        log "net: set net.bridge.bridge-nf-call-$k=0 (was $v; restored by down-all)"
    done
}

# Create the host's netns + veth (kept across stop/up) and give it IP.
setup_host_net_locked() {
    local name=$1 ip=$2 ns veth other
    ns=$(netns_of "$name"); veth=$(veth_of "$name")
    # the IP must not belong to another host of this fleet
    # (A host being deleted by another test at the same moment may lose its ip file
    # between the glob and the read: a host that is gone owns no IP.)
    local theirs
    for other in "$FLEET_RUN"/*/ip; do
        [ "$(basename "$(dirname "$other")")" = "$name" ] && continue
        theirs=$(cat "$other" 2>/dev/null) || continue
        [ "$theirs" = "$ip" ] && die "IP $ip already belongs to host $(basename "$(dirname "$other")")"
    done
    ensure_bridge_locked
    [ -e "/run/netns/$ns" ] || ip netns add "$ns"
    if ! ip link show dev "$veth" >/dev/null 2>&1; then
        ip -n "$ns" link del eth0 2>/dev/null || true
        ip link add name "$veth" type veth peer name eth0 netns "$ns"
    fi
    ip link set dev "$veth" master "$FLEET_BRIDGE" up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr flush dev eth0
    ip -n "$ns" addr add "$ip/24" dev eth0
    ip -n "$ns" link set eth0 up
    mkdir -p "$(hostdir "$name")"
    printf '%s\n' "$ip" >"$(hostdir "$name")/ip"
}

# ----------------------------------------------------------------------------
# Inside a host: PID 1 of the host's PID namespace (runs `fleet.sh __init NAME IP`)
# ----------------------------------------------------------------------------
check_key_types() {
    local t
    for t in $FLEET_HOST_KEY_TYPES; do
        case $t in rsa | ecdsa | ed25519) ;; *) die "FLEET_HOST_KEY_TYPES: unknown type '$t'" ;; esac
    done
}

# Shell snippet, run inside a host: create missing host keys of $FLEET_HOST_KEY_TYPES.
host_keygen_sh() {
    printf 'for t in %s; do [ -e /etc/ssh/ssh_host_${t}_key ] || ssh-keygen -q -t $t -N "" -C "root@$(hostname)" -f /etc/ssh/ssh_host_${t}_key </dev/null || exit 1; done' "$FLEET_HOST_KEY_TYPES"
}

write_sshd_config() { # $1 = rootfs path as seen by init, $2 = IP
    local t
    {
    printf '# written by tests/fleet/fleet.sh at every host start (test fleet host)\n'
    # drop-ins first (first value wins in sshd): `fleet.sh password` enables passwords
    printf 'Include /etc/ssh/sshd_config.d/*.conf\n'
    printf 'ListenAddress %s\nPort 22\n' "$2"
    for t in ed25519 ecdsa rsa; do
        if [[ " $FLEET_HOST_KEY_TYPES " == *" $t "* ]]; then
            printf 'HostKey /etc/ssh/ssh_host_%s_key\n' "$t"
        fi
    done
    cat <<EOF
KexAlgorithms curve25519-sha256
PermitRootLogin prohibit-password
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM yes
UseDNS no
MaxStartups 100:30:200
MaxSessions 10
LogLevel VERBOSE
PrintMotd no
PrintLastLog no
PidFile /run/sshd.pid
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
    } >"$1/etc/ssh/sshd_config"
}

install_authorized_key() { # $1 = rootfs, $2 = user, $3 = home, $4 = pubkey line
    local r=$1 u=$2 home=$3 key=$4
    mkdir -p "$r$home/.ssh"
    touch "$r$home/.ssh/authorized_keys"
    grep -qxF "$key" "$r$home/.ssh/authorized_keys" || printf '%s\n' "$key" >>"$r$home/.ssh/authorized_keys"
    chroot "$r" /bin/sh -c "chown -R $u: $home/.ssh && chmod 700 $home/.ssh && chmod 600 $home/.ssh/authorized_keys"
}

host_init() {
    local name=$1 ip=$2 h r hpid ppid
    h=$(hostdir "$name"); r=$h/root
    set +e
    # Our host-side PID: /proc is still the controller's procfs here.
    read -r hpid _ _ ppid _ </proc/self/stat
    printf '%s\n' "$ppid" >"$h/upid"
    printf '%s\n' "$hpid" >"$h/pid.new" && mv "$h/pid.new" "$h/pid"
    echo "[$(date -Is)] host $name ($ip) init, host pid $hpid"
    set -e
    # This mount ns copied the netns handles of other hosts; drop them so a
    # deleted host's namespace is not kept alive by ours.
    local i
    for i in 1 2 3 4; do mountpoint -q /run/netns 2>/dev/null || break; umount -l /run/netns || break; done
    hostname "$name"
    mkdir -p "$r" "$h/upper" "$h/work"
    mount -t overlay overlay -o "lowerdir=$FLEET_ROOTFS,upperdir=$h/upper,workdir=$h/work" "$r"
    mount -t proc -o nosuid,nodev,noexec proc "$r/proc"
    mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$r/sys"
    mount -t tmpfs -o mode=0755,nosuid,size=65536k tmpfs "$r/dev"
    mknod -m 666 "$r/dev/null" c 1 3;    mknod -m 666 "$r/dev/zero" c 1 5
    mknod -m 666 "$r/dev/full" c 1 7;    mknod -m 666 "$r/dev/random" c 1 8
    mknod -m 666 "$r/dev/urandom" c 1 9; mknod -m 666 "$r/dev/tty" c 5 0
    ln -s /proc/self/fd "$r/dev/fd";     ln -s /proc/self/fd/0 "$r/dev/stdin"
    ln -s /proc/self/fd/1 "$r/dev/stdout"; ln -s /proc/self/fd/2 "$r/dev/stderr"
    mkdir -m 0755 "$r/dev/pts"; mkdir -m 1777 "$r/dev/shm"
    mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts "$r/dev/pts"
    ln -s pts/ptmx "$r/dev/ptmx"
    mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$r/dev/shm"
    mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$r/run"
    mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$r/tmp"
    mkdir -p -m 0755 "$r/run/sshd" "$r/run/lock"

    # identity
    printf '%s\n' "$name" >"$r/etc/hostname"
    { grep -v '# fleet$' "$r/etc/hosts" 2>/dev/null || true
      printf '%s\t%s # fleet\n' "$ip" "$name"; } >"$r/etc/hosts.new"
    mv "$r/etc/hosts.new" "$r/etc/hosts"
    [ -s "$r/etc/machine-id" ] || od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$r/etc/machine-id"
    # a new host's service manager: the systemctl double (kept across restarts)
    if [ ! -s "$h/service" ]; then
        set_service_manager "$r" systemd && printf 'systemd\n' >"$h/service"
    fi

    # access
    local key
    key=$(<"$FLEET_RUN/id_ed25519.pub")
    install_authorized_key "$r" root /root "$key"
    install_authorized_key "$r" ops /home/ops "$key"
    install_authorized_key "$r" nosudo /home/nosudo "$key"
    write_sshd_config "$r" "$ip"
    chroot "$r" /usr/bin/env -i PATH="$SAFE_PATH" /bin/sh -c "$(host_keygen_sh)"
    set +e

    # "services enabled at boot": every executable in /etc/fleet/boot.d, sorted
    chroot "$r" /usr/bin/env -i PATH="$SAFE_PATH" HOME=/root LANG=C.UTF-8 /bin/bash -c '
        shopt -s nullglob
        for f in /etc/fleet/boot.d/*; do
            [ -f "$f" ] && [ -x "$f" ] || continue
            echo "[$(date -Is)] boot.d: running $f"
            timeout 60 "$f" </dev/null
            rc=$?
            [ $rc -eq 0 ] || echo "[$(date -Is)] boot.d: $f FAILED rc=$rc"
        done' >>"$r/var/log/fleet-boot.log" 2>&1
    grep FAILED "$r/var/log/fleet-boot.log" 2>/dev/null | tail -n 5

    # supervise sshd (PID 1 stays a shell that reaps orphans; `rekey` restarts sshd)
    chroot "$r" /usr/sbin/sshd -t -f /etc/ssh/sshd_config || echo "sshd -t failed"
    local rc started
    while :; do
        started=$SECONDS
        chroot "$r" /usr/bin/env -i PATH="$SAFE_PATH" LANG=C.UTF-8 \
            /usr/sbin/sshd -D -f /etc/ssh/sshd_config -E /var/log/sshd.log &
        wait $!
        rc=$?
        echo "[$(date -Is)] sshd exited rc=$rc, restarting"
        if ((SECONDS - started < 2)); then sleep 2; else sleep 0.2; fi  # no busy loop if broken
    done
}

# ----------------------------------------------------------------------------
# up / stop / down
# ----------------------------------------------------------------------------
up_locked() { # per-host lock held
    local name=$1 ip=$2 h pid old
    h=$(hostdir "$name")
    if pid=$(running_pid "$name"); then
        old=$(cat "$h/ip" 2>/dev/null || true)
        [ "$old" = "$ip" ] || die "host $name is running at $old, not $ip (stop it first)"
        wait_ready "$name" "$ip"
        log "up: $name already running at $ip (pid $pid)"
        return 0
    fi
    with_lock "$FLEET_RUN/.lock" setup_host_net_locked "$name" "$ip"
    [ -d "$h/upper" ] && log "up: $name: reusing its disk $h/upper"
    mkdir -p "$h/upper" "$h/work" "$h/root"
    rm -f "$h/pid" "$h/upid"
    printf '[%s] ---- up %s %s\n' "$(date -Is)" "$name" "$ip" >>"$h/console.log"
    # Detached from us: new session, stdin /dev/null, output to console.log,
    # no inherited lock fds.
    (
        cd /
        exec setsid env -i PATH="$SAFE_PATH" FLEET_RUN="$FLEET_RUN" FLEET_ROOTFS="$ROOTFS_DIR" \
            FLEET_HOST_KEY_TYPES="$FLEET_HOST_KEY_TYPES" \
            nsenter --net="/run/netns/$(netns_of "$name")" -- \
            unshare --uts --mount --pid --fork --kill-child --propagation private \
            bash "$SELF" __init "$name" "$ip"
    ) </dev/null >>"$h/console.log" 2>&1 8>&- 9>&- &
    wait_ready "$name" "$ip" stop-on-failure
    log "up: $name ready at $ip (pid $(<"$h/pid"))"
}

wait_ready() { # NAME IP [stop-on-failure]
    local name=$1 ip=$2 stop_on_fail=${3:-} h deadline
    h=$(hostdir "$name")
    deadline=$((SECONDS + FLEET_UP_TIMEOUT))
    while ((SECONDS < deadline)); do
        if [ -s "$h/pid" ] && ! running_pid "$name" >/dev/null; then
            log "up: $name: host init died; console log:"
            tail -n 20 "$h/console.log" >&2 || true
            stop_host "$name"
            die "host $name failed to start"
        fi
        tcp_open "$ip" 22 && return 0
        sleep 0.1
    done
    log "up: $name: console log tail:"; tail -n 10 "$h/console.log" >&2 || true
    log "up: $name: sshd.log tail:"; tail -n 20 "$h/upper/var/log/sshd.log" >&2 || true
    if [ -n "$stop_on_fail" ]; then
        stop_host "$name"
        log "up: $name: stopped again; logs: $h/console.log, $h/upper/var/log/{sshd,fleet-boot}.log"
    fi
    die "host $name: sshd not accepting TCP on $ip:22 after ${FLEET_UP_TIMEOUT}s"
}

cmd_up() {
    [ $# -eq 2 ] || die "usage: fleet.sh up NAME IP"
    need_root; check_name "$1"; check_ip "$2"; check_key_types
    local arch_file
    arch_file=$(hostdir "$1")/arch
    [ -s "$arch_file" ] && set_arch "$(<"$arch_file")"
    if [ "$ARCH" = arm64 ] && [ "$(uname -m)" != aarch64 ]; then
        binfmt_active || die "arm64 host $1 needs qemu-aarch64 in binfmt_misc: run 'fleet.sh binfmt on'"
    fi
    ensure_rootfs
    mkdir -p "$(hostdir "$1")"
    printf '%s\n' "$ARCH" >"$arch_file"
    ensure_key
    with_lock "$FLEET_RUN/.$1.lock" up_locked "$1" "$2" 8>&-
    printf '%s\n' "$2"
}

cmd_up_n() {
    [ $# -eq 3 ] || die "usage: fleet.sh up-n PREFIX N FIRST_OCTET"
    local prefix=$1 n=$2 first=$3 i pids=() fail=0
    [[ $n =~ ^[0-9]+$ && $first =~ ^[0-9]+$ ]] || die "N and FIRST_OCTET must be numbers"
    ((first >= 2 && first + n - 1 <= 254)) || die "octets $first..$((first + n - 1)) out of 2..254"
    need_root; ensure_rootfs; ensure_key
    for ((i = 1; i <= n; i++)); do
        bash "$SELF" up "$prefix$i" "$NET_PREFIX.$((first + i - 1))" >/dev/null &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || fail=$((fail + 1)); done
    ((fail == 0)) || die "up-n: $fail of $n hosts failed to start"
    for ((i = 1; i <= n; i++)); do printf '%s %s\n' "$prefix$i" "$NET_PREFIX.$((first + i - 1))"; done
}

stop_host() {
    local name=$1 h pid upid i
    h=$(hostdir "$name")
    if pid=$(running_pid "$name"); then
        kill -KILL "$pid" 2>/dev/null || true   # PID 1 of the namespace: everything in it dies
    fi
    upid=$(cat "$h/upid" 2>/dev/null || true)
    for ((i = 0; i < 100; i++)); do
        { [ -z "${pid:-}" ] || pid_gone "$pid"; } && break
        sleep 0.05
    done
    # the unshare parent exits once its child is gone; it holds the mount namespace
    # (with the overlay) until then
    if [ -n "$upid" ] && [ -r "/proc/$upid/cmdline" ] &&
        tr '\0' ' ' <"/proc/$upid/cmdline" | grep -q "unshare.* __init $name "; then
        for ((i = 0; i < 100; i++)); do pid_gone "$upid" && break; sleep 0.05; done
        pid_gone "$upid" || kill -KILL "$upid" 2>/dev/null || true
    fi
    { [ -z "${pid:-}" ] || pid_gone "$pid"; } || die "host $name: pid $pid did not die"
    rm -f "$h/pid" "$h/upid"
}

cmd_stop() {
    [ $# -eq 1 ] || die "usage: fleet.sh stop NAME"
    need_root; check_name "$1"
    [ -d "$(hostdir "$1")" ] || die "no such host: $1"
    with_lock "$FLEET_RUN/.$1.lock" stop_host "$1"
    log "stop: $1 stopped (disk and network kept)"
}

down_host() {
    local name=$1 h ns veth
    h=$(hostdir "$name"); ns=$(netns_of "$name"); veth=$(veth_of "$name")
    stop_host "$name"
    ip link del dev "$veth" 2>/dev/null || true
    [ -e "/run/netns/$ns" ] && ip netns del "$ns"
    safe_rm "$h"
}

cmd_down() {
    [ $# -eq 1 ] || die "usage: fleet.sh down NAME"
    need_root; check_name "$1"
    with_lock "$FLEET_RUN/.$1.lock" down_host "$1"
    log "down: $1 deleted"
}

cmd_down_all() {
    need_root
    local d name l ns
    if [ -d "$FLEET_RUN" ]; then
        for d in "$FLEET_RUN"/*/; do
            [ -e "$d/ip" ] || [ -e "$d/upper" ] || continue
            name=$(basename "$d")
            check_name "$name"
            down_host "$name"
            log "down-all: deleted $name"
        done
    fi
    # anything of ours that has no state dir any more
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$NETNS_PREFIX" || true); do
        ip netns del "$ns" || true
    done
    for l in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep "^$VETH_PREFIX" || true); do
        ip link del dev "$l" 2>/dev/null || true
    done
    if ip link show dev "$FLEET_BRIDGE" >/dev/null 2>&1; then
        ip link del dev "$FLEET_BRIDGE"
        log "down-all: deleted bridge $FLEET_BRIDGE"
    fi
    binfmt_off
    if [ -s "$FLEET_RUN/.sysctl-saved" ]; then
        while IFS== read -r k v; do
            echo "$v" >"/proc/sys/net/bridge/bridge-nf-call-$k" &&
                log "down-all: restored net.bridge.bridge-nf-call-$k=$v"
        done <"$FLEET_RUN/.sysctl-saved"
    fi
    safe_rm "$FLEET_RUN"
    log "down-all: clean"
}

# ----------------------------------------------------------------------------
# cut / uncut / rekey / exec / ssh / list
# ----------------------------------------------------------------------------
need_host() { check_name "$1"; [ -e "$(hostdir "$1")/ip" ] || die "no such host: $1"; }

cmd_cut() {
    [ $# -eq 1 ] || die "usage: fleet.sh cut|uncut NAME"
    need_root; need_host "$1"
    ip link set dev "$(veth_of "$1")" "$CUT_STATE"
    log "$CUT_VERB: $1 link $(veth_of "$1") $CUT_STATE"
}

cmd_shape() {
    [ $# -eq 2 ] || die "usage: fleet.sh shape NAME RATE|off   (RATE as tc writes it: 64kbit)"
    local dev
    need_root; need_host "$1"
    dev=$(veth_of "$1")
    tc qdisc del dev "$dev" root 2>/dev/null || true
    if [ "$2" != off ]; then
        [[ $2 =~ ^[0-9]+(bit|kbit|mbit)$ ]] || die "shape: rate like 64kbit, not '$2'"
        # Token bucket on the controller side: what the controller sends to the host
        # (uploads) goes at RATE.
        tc qdisc add dev "$dev" root tbf rate "$2" burst 4kb latency 2s ||
            die "shape: tc tbf on $dev failed"
    fi
    log "shape: $1 link $dev ${2}"
}

cmd_exec() {
    [ $# -ge 1 ] || die "usage: fleet.sh exec NAME -- CMD..."
    local name=$1 pid; shift
    [ "${1:-}" = -- ] && shift
    [ $# -ge 1 ] || die "usage: fleet.sh exec NAME -- CMD..."
    need_root; need_host "$name"
    pid=$(running_pid "$name") || die "host $name is not running"
    exec nsenter -t "$pid" -n -u -m -p -- chroot "$(hostdir "$name")/root" \
        /usr/bin/env -i PATH="$SAFE_PATH" HOME=/root USER=root LOGNAME=root \
        LANG=C.UTF-8 TERM="${TERM:-dumb}" "$@"
}

cmd_rekey() {
    [ $# -eq 1 ] || die "usage: fleet.sh rekey NAME"
    local name=$1 ip
    need_root; need_host "$name"
    running_pid "$name" >/dev/null || die "host $name is not running"
    ip=$(<"$(hostdir "$name")/ip")
    check_key_types
    bash "$SELF" exec "$name" -- /bin/sh -c '
        set -e
        rm -f /etc/ssh/ssh_host_*
        '"$(host_keygen_sh)"'
        old=$(cat /run/sshd.pid)
        kill "$old"
        while kill -0 "$old" 2>/dev/null; do sleep 0.05; done' ||
        die "rekey: $name: could not replace keys / stop sshd"
    wait_ready "$name" "$ip"
    log "rekey: $name has new host keys; sshd restarted"
}

cmd_ssh() {
    [ $# -ge 1 ] || die "usage: fleet.sh ssh [USER@]NAME -- CMD..."
    local target=$1 user=root name ip; shift
    [ "${1:-}" = -- ] && shift
    if [[ $target == *@* ]]; then user=${target%@*}; name=${target#*@}; else name=$target; fi
    need_host "$name"
    ip=$(<"$(hostdir "$name")/ip")
    exec ssh -i "$FLEET_RUN/id_ed25519" -o IdentitiesOnly=yes -o BatchMode=yes \
        -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
        -o ConnectTimeout=5 "$user@$ip" "$@"
}

cmd_list() {
    local d name state
    [ -d "$FLEET_RUN" ] || return 0
    for d in "$FLEET_RUN"/*/; do
        [ -e "$d/ip" ] || continue
        name=$(basename "$d")
        if running_pid "$name" >/dev/null; then state=running; else state=stopped; fi
        printf '%s %s %s\n' "$name" "$(<"$d/ip")" "$state"
    done
}

# ----------------------------------------------------------------------------
# Service managers: TEST DOUBLES (not systemd, not OpenRC). The rootfs has no service
# manager; every host gets one double of it, chosen per host, so the k3s install script
# (real or double) and continuum see what they would see on a real device:
#   systemd -> /usr/bin/systemctl (tests/fleet/doubles/systemctl)
#   openrc  -> /sbin/openrc-run, /sbin/rc-service, /sbin/rc-update (tests/fleet/doubles/openrc)
#   none    -> neither (install.sh refuses such a host)
# plus /etc/fleet/boot.d/50-services, which starts the enabled services at each boot.
# ----------------------------------------------------------------------------
set_service_manager() { # ROOT KIND: make KIND the service manager of the host at ROOT
    local r=$1 kind=$2 f
    rm -f "$r/usr/bin/systemctl" "$r/sbin/openrc-run" "$r/sbin/rc-service" "$r/sbin/rc-update"
    case $kind in
        systemd) install -m 0755 "$DOUBLES_DIR/systemctl" "$r/usr/bin/systemctl" ;;
        openrc) for f in openrc-run rc-service rc-update; do
                    install -m 0755 "$DOUBLES_DIR/openrc" "$r/sbin/$f"
                done ;;
        none) ;;
        *) die "service: kind must be systemd, openrc or none (not '$kind')" ;;
    esac
    mkdir -p "$r/etc/fleet/boot.d"
    install -m 0755 "$DOUBLES_DIR/boot-services" "$r/etc/fleet/boot.d/50-services"
}

cmd_service() {
    [ $# -eq 2 ] || die "usage: fleet.sh service NAME systemd|openrc|none"
    local name=$1 kind=$2 pid
    case $kind in systemd | openrc | none) ;; *) die "service: kind must be systemd, openrc or none" ;; esac
    need_root; need_host "$name"
    pid=$(running_pid "$name") || die "host $name is not running"
    nsenter -t "$pid" -m -- bash "$SELF" __service "$(hostdir "$name")/root" "$kind" ||
        die "service: could not set $kind on $name"
    printf '%s\n' "$kind" >"$(hostdir "$name")/service"
    log "service: $name now has the $kind double as its service manager"
}

# ----------------------------------------------------------------------------
# Personas: TEST DOUBLES OF DEVICE FIRMWARE (not product code, not real devices).
#
# A persona makes an amd64 fleet host present the device files continuum's probe and
# preparation read at their REAL paths (docs/k3s.md, "Devices and sizing"), so the product has no test
# hooks. /proc and /sys are the real kernel's here, so the persona covers single paths
# inside the host's own mount namespace (nothing outside the host changes):
#   - tmpfs over /sys/firmware            -> devicetree/base/model (Pi / Jetson model)
#   - tmpfs over /sys/fs/cgroup           -> cgroup.controllers (the memory controller
#                                            as the "firmware + kernel" decided at boot)
#   - bind mount over /proc/cmdline       -> the kernel command line the firmware built
#   - plain files: /boot/firmware/{cmdline,config}.txt, /etc/nv_tegra_release,
#     /usr/bin/nvidia-container-runtime (toolkit double), /usr/sbin/iptables (version
#     double), /usr/local/sbin/reboot (reboot double)
# Pi 6.12 semantics: the firmware prepends `cgroup_disable=memory` to the line it reads
# (cmdline.txt, or the file named by `cmdline=` in config.txt); the memory controller
# is on only when a LATER `cgroup_enable=memory` follows; `cgroup_memory=1` is ignored.
# The reboot double re-runs that decision, kills every process of the host (sshd,
# k3s, sessions; PID 1 restarts sshd) and runs the boot.d hooks again, like a boot.
# ----------------------------------------------------------------------------
persona_boot_sh() {
    cat <<'EOS'
#!/bin/sh
# TEST DOUBLE of device firmware (continuum test fleet persona; NOT product code).
# Written by tests/fleet/fleet.sh; run at every (fake) boot from /etc/fleet/boot.d.
set -eu
. /etc/fleet/persona/env
mounted() { awk -v m="$1" '$2 == m { f = 1 } END { exit !f }' /proc/self/mounts; }
mounted /sys/firmware || mount -t tmpfs -o mode=0755,size=64k persona-firmware /sys/firmware
mkdir -p /sys/firmware/devicetree/base
printf '%s\000' "$MODEL" >/sys/firmware/devicetree/base/model
mounted /sys/fs/cgroup || mount -t tmpfs -o mode=0755,size=64k persona-cgroup /sys/fs/cgroup
controllers="cpuset cpu io memory hugetlb pids"
if [ "$KIND" = pi ]; then
    fw=/boot/firmware/cmdline.txt
    custom=$(sed -n 's/^cmdline=//p' /boot/firmware/config.txt 2>/dev/null | tail -n 1)
    [ -z "$custom" ] || fw=/boot/firmware/$custom
    line="coherent_pool=1M 8250.nr_uarts=1 snd_bcm2835.enable_headphones=0 cgroup_disable=memory $(head -n 1 "$fw")"
    mem=off
    for w in $line; do
        case $w in cgroup_disable=memory) mem=off ;; cgroup_enable=memory) mem=on ;; esac
    done
    [ "$mem" = on ] || controllers="cpuset cpu io pids"
    mkdir -p /run/persona
    printf '%s\n' "$line" >/run/persona/cmdline
    mounted /proc/cmdline || mount --bind /run/persona/cmdline /proc/cmdline
    echo "[$(date -Is)] persona boot: firmware read $fw; memory cgroup $mem"
fi
printf '%s\n' "$controllers" >/sys/fs/cgroup/cgroup.controllers
EOS
}

persona_reboot_sh() {
    cat <<'EOS'
#!/bin/sh
# TEST DOUBLE of `reboot` on a persona host (continuum test fleet; NOT product code).
# After a second: the "firmware" re-reads cmdline.txt, every process of the host is
# killed (PID 1 restarts sshd), and the boot.d hooks run again.
echo "[$(date -Is)] reboot requested" >>/var/log/fleet-reboot.log
setsid sh -c '
    sleep 1
    /etc/fleet/persona/boot
    kill -KILL -1
    for f in /etc/fleet/boot.d/*; do
        [ -f "$f" ] && [ -x "$f" ] && [ "$f" != /etc/fleet/boot.d/00-persona ] && timeout 60 "$f" </dev/null
    done
    echo "[$(date -Is)] rebooted"
' </dev/null >>/var/log/fleet-reboot.log 2>&1 &
exit 0
EOS
}

# ----------------------------------------------------------------------------
# binfmt: qemu-aarch64 for arm64 hosts (machine-wide; removed again by `binfmt off`
# and `down-all`, but only when the fleet registered it: marker $FLEET_RUN/.binfmt-ours)
# ----------------------------------------------------------------------------
binfmt_active() { [ -e "$BINFMT_DIR/$BINFMT_NAME" ] && head -n 1 "$BINFMT_DIR/$BINFMT_NAME" | grep -qx enabled; }

binfmt_on() {
    local qemu
    qemu=$(command -v qemu-aarch64-static) || die "qemu-aarch64-static missing: run 'fleet.sh deps'"
    if [ ! -e "$BINFMT_DIR/register" ]; then
        mount -t binfmt_misc binfmt_misc "$BINFMT_DIR" || die "cannot mount binfmt_misc on $BINFMT_DIR"
    fi
    if binfmt_active; then
        log "binfmt: $BINFMT_NAME already registered"
        return 0
    fi
    # ELF64 little-endian, e_machine 0xb7 (aarch64). F: open the interpreter now, so it
    # works inside the hosts' chroots without copying qemu into them; C (implies O):
    # credentials from the binary, so setuid programs (sudo) work for non-root users.
    printf '%s' ":$BINFMT_NAME:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:$qemu:OCF" \
        >"$BINFMT_DIR/register" || die "binfmt: registration of $BINFMT_NAME failed"
    mkdir -p "$FLEET_RUN"
    : >"$FLEET_RUN/.binfmt-ours"
    log "binfmt: registered $BINFMT_NAME -> $qemu (machine-wide; 'fleet.sh binfmt off' removes it)"
}

binfmt_off() {
    [ -e "$FLEET_RUN/.binfmt-ours" ] || return 0
    if [ -e "$BINFMT_DIR/$BINFMT_NAME" ]; then
        echo -1 >"$BINFMT_DIR/$BINFMT_NAME" && log "binfmt: removed $BINFMT_NAME"
    fi
    rm -f "$FLEET_RUN/.binfmt-ours"
}

cmd_binfmt() {
    need_root
    case ${1:-status} in
        on) with_lock "$FLEET_RUN/.lock" binfmt_on ;;
        off) with_lock "$FLEET_RUN/.lock" binfmt_off ;;
        status)
            if binfmt_active; then
                printf 'registered%s\n' "$([ -e "$FLEET_RUN/.binfmt-ours" ] && echo ' (by the fleet)')"
            else
                echo "not registered"
            fi ;;
        *) die "usage: fleet.sh binfmt on|off|status" ;;
    esac
}

cmd_password() {
    [ $# -eq 2 ] || die "usage: fleet.sh password NAME USER  (password on stdin)"
    local name=$1 user=$2 pw ip
    need_root; need_host "$name"
    running_pid "$name" >/dev/null || die "host $name is not running"
    [[ $user =~ ^[a-z][a-z0-9_-]*$ ]] || die "bad user name '$user'"
    IFS= read -r pw || true
    [ -n "$pw" ] || die "password: no password on stdin"
    ip=$(<"$(hostdir "$name")/ip")
    printf '%s:%s\n' "$user" "$pw" | bash "$SELF" exec "$name" -- sh -c '
        set -e
        chpasswd
        home=$(getent passwd "$1" | cut -d: -f6)
        rm -f "$home/.ssh/authorized_keys"
        printf "# fleet.sh password: a fresh device image takes password logins\nPasswordAuthentication yes\n" \
            >/etc/ssh/sshd_config.d/50-fleet-password.conf
        old=$(cat /run/sshd.pid)
        kill "$old"
        while kill -0 "$old" 2>/dev/null; do sleep 0.05; done' sh "$user" ||
        die "password: could not set up $name"
    wait_ready "$name" "$ip"
    log "password: $name takes password logins for $user (no authorized key)"
}

cmd_persona() {
    [ $# -ge 2 ] || die "usage: fleet.sh persona NAME pi|jetson [K=V...]"
    local name=$1 kind=$2 kv k v; shift 2
    need_root; need_host "$name"
    running_pid "$name" >/dev/null || die "host $name is not running"
    local cmdline=ok iptables='' toolkit=yes l4t=R35:4.1 model=''
    for kv in "$@"; do
        k=${kv%%=*}; v=${kv#*=}
        case $kind:$k in
            pi:cmdline) [[ $v =~ ^(ok|stuck)$ ]] || die "persona: cmdline=ok|stuck"; cmdline=$v ;;
            pi:iptables) [[ $v =~ ^[0-9]+(\.[0-9]+)*$ ]] || die "persona: bad iptables version"; iptables=$v ;;
            jetson:toolkit) [[ $v =~ ^(yes|no)$ ]] || die "persona: toolkit=yes|no"; toolkit=$v ;;
            jetson:l4t) [[ $v =~ ^R[0-9]+:[0-9.]+$ ]] || die "persona: l4t=R35:4.1"; l4t=$v ;;
            *:model) [[ $v != *\'* ]] || die "persona: no quotes in model"; model=$v ;;
            *) die "persona: unknown option '$kv' for $kind" ;;
        esac
    done
    local put="bash $SELF exec $name -- sh -c"
    case $kind in
        pi)
            : "${model:=Raspberry Pi 4 Model B Rev 1.4}"
            $put 'mkdir -p /boot/firmware && cat >/boot/firmware/cmdline.txt' \
                <<<"console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 fsck.repair=yes rootwait"
            if [ "$cmdline" = stuck ]; then
                # config.txt points the firmware at another file: editing cmdline.txt has no effect
                $put 'cat >/boot/firmware/config.txt' <<<$'[all]\narm_64bit=1\ncmdline=cmdline-recovery.txt'
                $put 'cat >/boot/firmware/cmdline-recovery.txt' \
                    <<<"console=serial0,115200 root=PARTUUID=4e639091-02 rootfstype=ext4 rootwait"
            else
                $put 'cat >/boot/firmware/config.txt' <<<$'[all]\narm_64bit=1'
            fi
            if [ -n "$iptables" ]; then
                $put 'cat >/usr/sbin/iptables && chmod 755 /usr/sbin/iptables' <<EOS
#!/bin/sh
# TEST DOUBLE of iptables (fleet persona): reports a version, does nothing else.
[ "\${1:-}" = --version ] && { echo "iptables v$iptables (nf_tables)"; exit 0; }
echo "iptables test double: only --version" >&2; exit 1
EOS
            fi
            ;;
        jetson)
            : "${model:=NVIDIA Jetson Orin Nano Developer Kit}"
            $put 'cat >/etc/nv_tegra_release' \
                <<<"# ${l4t%%:*} (release), REVISION: ${l4t#*:}, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023"
            if [ "$toolkit" = yes ]; then
                $put 'cat >/usr/bin/nvidia-container-runtime && chmod 755 /usr/bin/nvidia-container-runtime' <<'EOS'
#!/bin/sh
# TEST DOUBLE of nvidia-container-runtime (fleet Jetson persona; not NVIDIA software).
case "${1:-}" in
    --version | -v) echo "NVIDIA Container Runtime version 1.14.2 (test double)" ;;
    *) echo "nvidia-container-runtime test double: cannot run containers" >&2; exit 1 ;;
esac
EOS
            else
                $put 'rm -f /usr/bin/nvidia-container-runtime'
            fi
            ;;
        *) die "persona: kind must be pi or jetson" ;;
    esac
    $put 'mkdir -p /etc/fleet/persona && cat >/etc/fleet/persona/env' \
        <<<"KIND=$kind"$'\n'"MODEL='$model'"
    persona_boot_sh | $put 'cat >/etc/fleet/persona/boot && chmod 755 /etc/fleet/persona/boot'
    persona_reboot_sh | $put 'mkdir -p /usr/local/sbin && cat >/usr/local/sbin/reboot && chmod 755 /usr/local/sbin/reboot'
    $put 'ln -sf /etc/fleet/persona/boot /etc/fleet/boot.d/00-persona && /etc/fleet/persona/boot' ||
        die "persona: boot of $name failed"
    log "persona: $name looks like a $kind ($model) -- a test double of device firmware"
}

# ----------------------------------------------------------------------------
main() {
    set_arch "${FLEET_ARCH:-amd64}"
    local cmd=${1:-help}
    [ $# -gt 0 ] && shift
    case $cmd in
        deps) cmd_deps "$@" ;;
        rootfs) cmd_rootfs "$@" ;;
        key) cmd_key "$@" ;;
        up) cmd_up "$@" ;;
        up-n) cmd_up_n "$@" ;;
        stop) cmd_stop "$@" ;;
        cut) CUT_STATE=down CUT_VERB=cut cmd_cut "$@" ;;
        uncut) CUT_STATE=up CUT_VERB=uncut cmd_cut "$@" ;;
        rekey) cmd_rekey "$@" ;;
        shape) cmd_shape "$@" ;;
        exec) cmd_exec "$@" ;;
        ssh) cmd_ssh "$@" ;;
        down) cmd_down "$@" ;;
        down-all) cmd_down_all "$@" ;;
        list) cmd_list "$@" ;;
        persona) cmd_persona "$@" ;;
        service) cmd_service "$@" ;;
        __service) set_service_manager "$@" ;;   # internal: run inside a host's mount ns
        password) cmd_password "$@" ;;
        binfmt) cmd_binfmt "$@" ;;
        __init) host_init "$@" ;;   # internal: PID 1 of a host (started by `up`)
        help | -h | --help) usage ;;
        *) usage >&2; die "unknown command: $cmd" ;;
    esac
}

# Keep `main; exit` on one line: bash reads scripts lazily, and long-running
# hosts must never read a later (edited) version of this file.
main "$@"; exit $?
