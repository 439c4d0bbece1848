#!/usr/bin/env bash
# tests/fleet/selftest.sh -- self-test of the SSH test fleet harness (fleet.sh).
# Test tooling only, not a product component.
#
# Runs the whole fleet life cycle inside a PRIVATE network + mount namespace with its
# own FLEET_RUN, so it never touches a fleet other tests are using on this machine
# (same bridge name and 10.250.0.0/24 are fine: they live in the private netns).
#
#   sudo bash tests/fleet/selftest.sh [ROUNDS] [BIG_N]     (defaults: 2 rounds, 20 hosts)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if [ "${1:-}" != __inner ]; then
    bash "$HERE/fleet.sh" deps
    t0=$(date +%s.%N)
    bash "$HERE/fleet.sh" rootfs >/dev/null
    awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "selftest: deps + rootfs ready in %.2f s\n", b - a }' >&2
    mkdir -p /run/netns
    exec unshare --net --mount --propagation private -- bash "${BASH_SOURCE[0]}" __inner "${1:-2}" "${2:-20}"
fi
shift
ROUNDS=$1 BIG=$2

# private /run/netns and FLEET_RUN for this namespace
mount -t tmpfs -o mode=0755,size=16m tmpfs /run/netns
ip link set lo up
export FLEET_RUN=/run/cfleet-selftest
F=$HERE/fleet.sh
fleet() { bash "$F" "$@"; }

fail() { echo "selftest: FAIL: $*" >&2; exit 1; }
ok() { echo "selftest: ok: $*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

round() {
    local r=$1 t key kh o ip h
    echo "selftest: ===== round $r =====" >&2
    t=$(now); fleet up-n t 3 10 >/dev/null; ok "up-n t 3 10 in $(since "$t") s"
    key=$(fleet key)
    kh=$(mktemp)
    o=(-i "$key" -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no
       -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=3)
    for ip in 10.250.0.10 10.250.0.11 10.250.0.12; do
        out=$(ssh "${o[@]}" "root@$ip" 'hostname; uname -m; python3 -c "import yaml"; openssl version >/dev/null; echo ok')
        h=$(echo "$out" | head -1)
        [ "$(echo "$out" | tr '\n' ' ')" = "$h x86_64 ok " ] || fail "root@$ip: $out"
        ok "root@$ip: hostname=$h x86_64 yaml openssl"
        ssh "${o[@]}" "ops@$ip" 'sudo -n true' || fail "ops sudo on $ip"
        t=$(now)
        if ssh "${o[@]}" "nosudo@$ip" 'sudo -n true' 2>/dev/null; then fail "nosudo has sudo on $ip"; fi
        ok "$ip: ops sudo -n works, nosudo sudo -n refused in $(since "$t") s"
    done
    [ "$(fleet list | awk '$3 == "running"' | wc -l)" = 3 ] || fail "list: $(fleet list)"

    # host to host and host to controller
    ssh "${o[@]}" root@10.250.0.10 'set -e
        timeout 3 bash -c "</dev/tcp/10.250.0.11/22"
        timeout 3 bash -c "</dev/tcp/10.250.0.12/22"
        timeout 3 bash -c "</dev/tcp/10.250.0.1/9" 2>&1 | grep -q "Connection refused"' ||
        fail "t1 -> t2/t3/controller TCP"
    ok "t1 reaches t2:22, t3:22 and the controller 10.250.0.1 (RST from a closed port)"

    # persistence across stop/up, same host key; boot.d
    local ko=(-i "$key" -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=accept-new
              -o UserKnownHostsFile="$kh" -o LogLevel=ERROR -o ConnectTimeout=3)
    ssh "${ko[@]}" root@10.250.0.11 'echo persisted-'"$r"' > /root/marker
        mkdir -p /etc/fleet/boot.d
        printf "#!/bin/sh\ntouch /root/booted\n" > /etc/fleet/boot.d/50-touch
        printf "#!/bin/sh\necho failing on purpose; exit 3\n" > /etc/fleet/boot.d/40-fail
        chmod +x /etc/fleet/boot.d/*' || fail "write on t2"
    t=$(now); fleet stop t2; fleet stop t2; ok "stop t2 (twice) in $(since "$t") s"
    [ "$(fleet list | awk '$1 == "t2" { print $3 }')" = stopped ] || fail "t2 not stopped"
    if ssh "${ko[@]}" root@10.250.0.11 true 2>/dev/null; then fail "ssh to stopped t2 worked"; fi
    ok "ssh to stopped t2 fails"
    t=$(now); fleet up t2 10.250.0.11 >/dev/null; ok "up t2 again in $(since "$t") s"
    [ "$(ssh "${ko[@]}" root@10.250.0.11 'cat /root/marker; test -e /root/booted && echo booted')" = "persisted-$r
booted" ] || fail "t2 lost its file or boot.d did not run"
    ok "t2 kept /root/marker, same host key accepted, boot.d script ran (failing one logged)"
    fleet exec t2 -- grep -q 'FAILED rc=3' /var/log/fleet-boot.log || fail "boot.d failure not logged"

    t=$(now); fleet rekey t2; ok "rekey t2 in $(since "$t") s"
    if ssh "${ko[@]}" root@10.250.0.11 true 2>/dev/null; then fail "old pinned key still accepted"; fi
    ok "ssh with old pinned key refused after rekey"

    # cut / uncut
    fleet cut t3
    if ssh "${o[@]}" -o ConnectTimeout=2 root@10.250.0.12 true 2>/dev/null; then fail "cut t3 still reachable"; fi
    fleet uncut t3
    ssh "${o[@]}" root@10.250.0.12 true || fail "uncut t3 unreachable"
    ok "cut/uncut t3"

    # exec
    [ "$(fleet exec t1 -- cat /etc/hostname)" = t1 ] || fail "exec hostname"
    set +e; fleet exec t1 -- sh -c 'exit 7'; rc=$?; set -e
    [ $rc = 7 ] || fail "exec rc $rc"
    [ "$(fleet ssh ops@t1 -- whoami)" = ops ] || fail "fleet ssh"
    ok "exec t1 (output + exit code), ssh ops@t1"

    # idempotent up of a running host
    fleet up t1 10.250.0.10 >/dev/null; ok "up of running t1 is a no-op"
    rm -f "$kh"

    t=$(now); fleet down-all; ok "down-all in $(since "$t") s"
    [ -z "$(ip netns list | grep cfleet || true)" ] || fail "netns left: $(ip netns list)"
    ! ip link show cfleet0 >/dev/null 2>&1 || fail "bridge left"
    [ -z "$(ip -o link | grep cfv || true)" ] || fail "veth left"
    ! grep -q cfleet /proc/mounts || fail "mounts left: $(grep cfleet /proc/mounts)"
    [ ! -e "$FLEET_RUN" ] || fail "$FLEET_RUN left"
    ok "machine clean after down-all (no netns, bridge, veth, mounts, $FLEET_RUN)"
}

for ((i = 1; i <= ROUNDS; i++)); do round "$i"; done

if ((BIG > 0)); then
    echo "selftest: ===== $BIG hosts in parallel =====" >&2
    m0=$(awk '/MemAvailable/ { print $2 }' /proc/meminfo)
    t=$(now)
    pids=()
    for ((i = 0; i < BIG; i++)); do
        fleet up "b$i" "10.250.0.$((100 + i))" >/dev/null & pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || fail "a big-fleet host failed"; done
    ok "$BIG hosts up in $(since "$t") s"
    key=$(fleet key)
    t=$(now)
    for ((i = 0; i < BIG; i++)); do
        ssh -i "$key" -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
            -o LogLevel=ERROR "root@10.250.0.$((100 + i))" hostname >/dev/null &
    done
    wait
    ok "$BIG parallel ssh logins in $(since "$t") s"
    m1=$(awk '/MemAvailable/ { print $2 }' /proc/meminfo)
    pss=0
    for d in "$FLEET_RUN"/*/pid; do
        ns=$(readlink "/proc/$(<"$d")/ns/pid")
        for p in /proc/[0-9]*; do
            [ "$(readlink "$p/ns/pid" 2>/dev/null)" = "$ns" ] || continue
            v=$(awk '/^Pss:/ { print $2 }' "$p/smaps_rollup" 2>/dev/null || echo 0)
            pss=$((pss + ${v:-0}))
        done
    done
    ok "memory: MemAvailable dropped by $(((m0 - m1) / 1024)) MB for $BIG hosts; processes' PSS total $((pss / 1024)) MB ($((pss / BIG)) kB/host)"
    t=$(now); fleet down-all; ok "down-all of $BIG hosts in $(since "$t") s"
    ! grep -q cfleet /proc/mounts || fail "mounts left"
fi
echo "selftest: ALL PASSED" >&2
