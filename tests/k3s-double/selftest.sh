#!/usr/bin/env bash
# Self-test of the k3s TEST DOUBLE (not k3s) on the test fleet (tests/fleet/fleet.sh).
# Uses hosts at 10.250.0.200-209 only (kd-* names) and deletes them at the end
# (KEEP=1 keeps them). Run as root:  tests/k3s-double/selftest.sh
# Scenarios: 1 server + 2 agents; idempotent re-install; wrong token / CA hash;
# bootstrap tokens (k3s token create/list/delete, expiry, deletion);
# unknown config keys; HA with cluster-init + critical-config mismatch; node
# password clash; openrc hosts and hosts without a service manager; uninstall leaves
# nothing; host stop + up comes back via boot.d; manifests and HelmCharts (deploy
# controller, helm-controller, values keys); Secrets, valuesSecrets at two k3s
# versions, what the node's ports 80/443 serve (ingress-nginx, Traefik's Gateway API),
# Knative's PVC feature flags, MinIO's existingSecret (issue 11).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
F=${FLEET:-$HERE/../fleet/fleet.sh}
NET=10.250.0
FAILS=0
TMPD=$(mktemp -d)
trap 'rm -rf "$TMPD"' EXIT

pass() { printf 'PASS  %s\n' "$*"; }
fail() { printf 'FAIL  %s\n' "$*"; FAILS=$((FAILS + 1)); return 1; }
check() { if eval "$2"; then pass "$1"; else fail "$1"; fi; }   # check WHAT 'CONDITION'
has() { grep -qF -- "$1" <<<"$out"; }                              # has TEXT (in $out)
x() { "$F" exec "$@"; }                      # x HOST -- CMD...
push() {                                     # push HOST: bundle into the host
    x "$1" -- sh -c 'mkdir -p /root/bundle && cat > /root/bundle/install.sh' < "$HERE/install.sh"
    x "$1" -- sh -c 'cat > /usr/local/bin/k3s && chmod 755 /usr/local/bin/k3s' < "$HERE/k3s"
    x "$1" -- sh -c 'mkdir -p /var/lib/rancher/k3s/agent/images && cat > /var/lib/rancher/k3s/agent/images/k3s-airgap-images-amd64.tar.zst' < "$HERE/k3s-airgap-images-amd64.tar.zst"
}
config() { x "$1" -- sh -c 'mkdir -p /etc/rancher/k3s && umask 077 && cat > /etc/rancher/k3s/config.yaml'; }
install() { # install HOST ROLE [ENV...]: prints output, returns the script's exit code
    local h=$1 role=$2; shift 2
    x "$h" -- env INSTALL_K3S_SKIP_DOWNLOAD=true INSTALL_K3S_EXEC="$role" "$@" sh /root/bundle/install.sh 2>&1
}
nodes_json() { x "$1" -- k3s kubectl get nodes -o json; }
ready_names() { # HOST -> "name:Ready ..." sorted
    nodes_json "$1" | python3 -c '
import json, sys
for n in json.load(sys.stdin)["items"]:
    st = [c["status"] for c in n["status"]["conditions"] if c["type"] == "Ready"][0]
    print(n["metadata"]["name"] + ":" + st)' | sort | tr '\n' ' '
}
wait_for() { # wait_for SECONDS 'CONDITION'
    for _ in $(seq 1 $(($1 * 2))); do eval "$2" && return 0; sleep 0.5; done
    return 1
}

check "k3s-arm64 is k3s with BUILD_ARCH=arm64 (run regen-arm64.sh)" \
    'diff <(grep -v "^BUILD_ARCH = " "$HERE/k3s") <(grep -v "^BUILD_ARCH = " "$HERE/k3s-arm64") >/dev/null && grep -q "^BUILD_ARCH = \"arm64\"" "$HERE/k3s-arm64"'

HOSTS=(kd1:200 kd2:201 kd3:202 kh1:203 kh2:204 kh3:205 kh4:206 kx1:207 km1:208 km2:209)
for hp in "${HOSTS[@]}"; do "$F" down "${hp%:*}" >/dev/null 2>&1 || true; done
for hp in "${HOSTS[@]}"; do "$F" up "${hp%:*}" "$NET.${hp#*:}" >/dev/null || { echo "fleet up failed"; exit 1; }; done
for hp in "${HOSTS[@]}"; do push "${hp%:*}"; done

echo "== 1. one server + two agents (token only in config.yaml)"
printf 'node-label:\n  - site=lab\n' | config kd1
out=$(install kd1 server); rc=$?
check "server install exits 0" '[ $rc -eq 0 ]' || echo "$out"
TOKEN=$(x kd1 -- cat /var/lib/rancher/k3s/server/token)
SECRET=${TOKEN##*::server:}
HASH=${TOKEN:3:64}
check "token file is K10 format, mode 600" \
    '[[ $TOKEN =~ ^K10[0-9a-f]{64}::server: ]] && [ "$(x kd1 -- stat -c %a /var/lib/rancher/k3s/server/token)" = 600 ]'
for h in kd2 kd3; do
    printf 'server: https://%s.200:6443\ntoken: %s\nnode-label:\n  - pool=%s\n  - nvidia.com/gpu.present=false\n' "$NET" "$TOKEN" "$h" | config $h
    out=$(install $h agent); rc=$?
    check "agent $h install exits 0 (returns after registration)" '[ $rc -eq 0 ]' || echo "$out"
    check "agent $h: token not in the unit or env file" \
        '! x $h -- cat /etc/systemd/system/k3s-agent.service.env /etc/systemd/system/k3s-agent.service | grep -qF "$SECRET"'
done
check "3 nodes Ready" 'wait_for 10 "[ \"\$(ready_names kd1)\" = \"kd1:True kd2:True kd3:True \" ]"'
labels=$(nodes_json kd1 | python3 -c '
import json,sys
for n in json.load(sys.stdin)["items"]:
    l = n["metadata"]["labels"]; print(n["metadata"]["name"], l.get("pool"), l.get("site"), l["kubernetes.io/arch"], "control-plane" if "node-role.kubernetes.io/control-plane" in l else "-")')
echo "$labels" | sed 's/^/      /'
check "agents carry their node-labels" \
    'grep -q "^kd2 kd2 None amd64 -" <<<"$labels" && grep -q "^kd3 kd3 None amd64 -" <<<"$labels" && grep -q "^kd1 None lab amd64 control-plane" <<<"$labels"'
x kd1 -- k3s kubectl get nodes | sed 's/^/      /'
check "get --raw /readyz = ok" '[ "$(x kd1 -- kubectl get --raw /readyz)" = ok ]'
check "coredns available" 'wait_for 5 "x kd1 -- k3s kubectl -n kube-system get deployment coredns -o json | grep -q \"\\\"availableReplicas\\\": 1\""'
check "/cacerts without auth" 'curl -ks https://$NET.200:6443/cacerts | grep -q "BEGIN CERTIFICATE"'
check "API refuses requests without the admin client cert" '[ "$(curl -ks -o /dev/null -w "%{http_code}" https://$NET.200:6443/api/v1/nodes)" = 401 ]'
out=$(x kd1 -- su nosudo -s /bin/sh -c 'k3s kubectl get nodes' 2>&1); rc=$?
check "kubectl as non-root: permission denied" \
    '[ $rc -eq 1 ] && has "error loading config file \"/etc/rancher/k3s/k3s.yaml\": open /etc/rancher/k3s/k3s.yaml: permission denied"'
out=$(x kd1 -- k3s kubectl get pods -A 2>&1); rc=$?
check "unsupported kubectl invocation fails" '[ $rc -eq 1 ] && has "kubectl double: unsupported invocation: get pods -A"'
out=$(x kd1 -- sh -c 'kubectl cordon kd2 && kubectl label node kd2 a=b && kubectl get node kd2 -o json && kubectl uncordon kd2 && kubectl drain kd3 --ignore-daemonsets --delete-emptydir-data --timeout=60s && kubectl uncordon kd3' 2>&1); rc=$?
check "cordon / label / drain / uncordon" '[ $rc -eq 0 ] && has "\"unschedulable\": true" && has "node/kd3 drained" && has "\"a\": \"b\""'
out=$(x kd1 -- kubectl get node nope -o json 2>&1); rc=$?
check "NotFound node" '[ $rc -eq 1 ] && has "Error from server (NotFound): nodes \"nope\" not found"'

echo "== 2. second identical install changes no file"
for h in kd1 kd2 kd3; do
    role=server; [ $h = kd1 ] || role=agent
    x $h -- sh -c 'touch /tmp/.marker; sleep 1.1'
    out=$(install $h $role); rc=$?
    changed=$(x $h -- sh -c 'find / -xdev -newer /tmp/.marker ! -path /tmp ! -path "/tmp/*" ! -path "/var/log/*" 2>/dev/null')
    check "$h: re-install exits 0, no restart, changed files: [${changed}]" '[ $rc -eq 0 ] && [ -z "$changed" ] && has "No change detected"'
done
out=$(install kd2 agent INSTALL_K3S_FORCE_RESTART=true); rc=$?
check "INSTALL_K3S_FORCE_RESTART=true restarts" '[ $rc -eq 0 ] && has "Starting k3s-agent"'
# The real script's restart rule (docs/k3s.md, "Restart rule"): hashes before and after
# its own run. A stopped, unchanged unit stays stopped; a binary replaced before the run
# (the air-gap way) is no change either.
x kd2 -- systemctl stop k3s-agent
out=$(install kd2 agent); rc=$?
check "stopped unchanged unit: not started, as the real script" \
    '[ $rc -eq 0 ] && has "No change detected" && ! x kd2 -- systemctl is-active --quiet k3s-agent'
x kd2 -- sh -c 'cp /usr/local/bin/k3s /tmp/k3s.new && mv /tmp/k3s.new /usr/local/bin/k3s && echo "# replaced" >> /usr/local/bin/k3s'
out=$(install kd2 agent); rc=$?
check "binary replaced before the run: no start" '[ $rc -eq 0 ] && has "No change detected"'
out=$(install kd2 agent INSTALL_K3S_FORCE_RESTART=true); rc=$?
check "FORCE_RESTART starts the stopped unit" '[ $rc -eq 0 ] && x kd2 -- systemctl is-active --quiet k3s-agent'

echo "== 3. wrong token and wrong CA hash fail clearly"
# Later runs on kx1 change only config.yaml: like the real script, the double then
# starts nothing unless INSTALL_K3S_FORCE_RESTART=true (as continuum passes it).
printf 'server: https://%s.200:6443\ntoken: K10%s::server:wrong-secret\n' "$NET" "$HASH" | config kx1
out=$(install kx1 agent); rc=$?
echo "$out" | tail -n 2 | sed 's/^/      /'
check "wrong token: install fails with 401" '[ $rc -ne 0 ] && has "401 Unauthorized"'
check "wrong token: secret not printed" '! has wrong-secret'
printf 'server: https://%s.200:6443\ntoken: K10%s::server:%s\n' "$NET" "$(printf '0%.0s' $(seq 64))" "$SECRET" | config kx1
out=$(install kx1 agent INSTALL_K3S_FORCE_RESTART=true); rc=$?
echo "$out" | tail -n 1 | sed 's/^/      /'
check "wrong CA hash: install fails" '[ $rc -ne 0 ] && has "token CA hash does not match the Cluster CA certificate hash"'
check "wrong CA hash: secret not printed" '! has "$SECRET"'

echo "== 3b. bootstrap tokens: token create/list/delete; join; expired or deleted refused; joined node stays"
out=$(x kd1 -- k3s token create --ttl 1h --description "selftest pool" 2>&1); rc=$?
BT=$(printf '%s\n' "$out" | tail -n 1)
BTID=${BT##*::}; BTID=${BTID%%.*}
check "token create prints one K10<CA hash>::<id>.<secret> line" \
    '[ $rc -eq 0 ] && [[ $BT =~ ^K10[0-9a-f]{64}::[a-z0-9]{6}\.[a-z0-9]{16}$ ]] && [ "${BT:3:64}" = "$HASH" ] && [ "$(printf "%s\n" "$out" | wc -l)" -eq 1 ]'
out=$(x kd1 -- k3s token list 2>&1)
check "token list names it with TTL, usages, description, group" \
    'has "$BTID" && has "selftest pool" && has "authentication,signing" && has "system:bootstrappers:k3s:default-node-token"'
printf 'server: https://%s.200:6443\ntoken: %s\nnode-label:\n  - pool=boot\n' "$NET" "$BT" | config kx1
out=$(install kx1 agent INSTALL_K3S_FORCE_RESTART=true); rc=$?
check "agent joins with the bootstrap token and its node-label" \
    '[ $rc -eq 0 ] && x kd1 -- k3s kubectl get nodes --show-labels | grep "^kx1 " | grep -q "pool=boot"'
out=$(x kd1 -- k3s token delete "$BTID" 2>&1); rc=$?
check "token delete prints bootstrap token \"ID\" deleted" '[ $rc -eq 0 ] && has "bootstrap token \"$BTID\" deleted"'
out=$(x kd1 -- k3s token delete "$BTID" 2>&1); rc=$?
check "deleting it again: not found, exit 1" '[ $rc -ne 0 ] && has "not found"'
out=$(install kx1 agent INSTALL_K3S_FORCE_RESTART=true); rc=$?
check "joined node restarts after its token was deleted (authenticates as itself)" \
    '[ $rc -eq 0 ] && wait_for 10 "ready_names kd1 | grep -q kx1:True"'
BT2=$(x kd1 -- k3s token create --ttl 2s | tail -n 1); BT2ID=${BT2##*::}; BT2ID=${BT2ID%%.*}
sleep 3
x kd1 -- k3s kubectl delete node kx1 >/dev/null
printf 'server: https://%s.200:6443\ntoken: %s\n' "$NET" "$BT2" | config kx1
out=$(install kx1 agent INSTALL_K3S_FORCE_RESTART=true); rc=$?
check "expired token and deleted Node: refused with 401" \
    '[ $rc -ne 0 ] && x kx1 -- grep -q "401 Unauthorized" /var/log/k3s-double/k3s-agent.log && x kd1 -- grep -q "invalid bearer token" /var/log/k3s-double/k3s.log'
check "tokencleaner removed the expired token" '! x kd1 -- k3s token list | grep -q "^$BT2ID "'
out=$(x kd1 -- k3s token create --ttl 1x 2>&1); rc=$?
check "a bad --ttl is refused" '[ $rc -ne 0 ] && has "invalid value \"1x\" for flag -ttl"'

echo "== 4. unknown / wrong-role config keys and bad environment fail"
printf 'server: https://%s.200:6443\ntoken: %s\nnode-lable:\n  - a=b\n' "$NET" "$TOKEN" | config kx1
out=$(install kx1 agent INSTALL_K3S_FORCE_RESTART=true); rc=$?
echo "$out" | tail -n 1 | sed 's/^/      /'
# Real k3s warns about config-file keys its subcommand does not have and skips them
# (pkg/configfilearg/parser.go); continuum never relies on that.
check "unknown key node-lable: warned and skipped, as real k3s" \
    '[ $rc -eq 0 ] && x kx1 -- grep -q "Unknown flag --node-lable found in config.yaml, skipping" /var/log/k3s-double/k3s-agent.log'
printf 'server: https://%s.200:6443\ntoken: %s\ncluster-init: true\n' "$NET" "$TOKEN" | config kx1
out=$(install kx1 agent INSTALL_K3S_FORCE_RESTART=true); rc=$?
check "server-only key cluster-init on an agent: warned and skipped" \
    '[ $rc -eq 0 ] && x kx1 -- grep -q "Unknown flag --cluster-init found in config.yaml, skipping" /var/log/k3s-double/k3s-agent.log'
# kx1 joined as a node for those two checks: take it out again.
x kx1 -- systemctl stop k3s-agent
x kd1 -- kubectl delete node kx1 >/dev/null
printf 'server: https://%s.200:6443\ntoken: %s\nnode-taint:\n  - a=b:Sometimes\n' "$NET" "$TOKEN" | config kx1
out=$(install kx1 agent INSTALL_K3S_FORCE_RESTART=true); rc=$?
check "bad taint effect rejected" '[ $rc -ne 0 ] && has "effect must be one of"'
out=$(x kx1 -- env INSTALL_K3S_EXEC=agent sh /root/bundle/install.sh 2>&1); rc=$?
check "no INSTALL_K3S_SKIP_DOWNLOAD: cannot download" '[ $rc -ne 0 ] && has "double: cannot download k3s (no network)"'
out=$(install kx1 agent INSTALL_K3S_FOO=1); rc=$?
check "unknown INSTALL_K3S_FOO rejected" '[ $rc -ne 0 ] && has "double: unknown variable INSTALL_K3S_FOO"'
out=$(x kx1 -- env INSTALL_K3S_SKIP_DOWNLOAD=true K3S_URL=https://$NET.200:6443 sh /root/bundle/install.sh 2>&1); rc=$?
check "K3S_URL without token: the real fatal message" \
    '[ $rc -ne 0 ] && has "Defaulted k3s exec command to '"'agent'"' because K3S_URL is defined, but K3S_TOKEN or K3S_TOKEN_FILE is not defined."'
printf 'server: https://%s.200:6443\ntoken: %s\nnode-name: kd2\n' "$NET" "$TOKEN" | config kx1
out=$(install kx1 agent INSTALL_K3S_FORCE_RESTART=true); rc=$?
check "duplicate node name: node password rejected" '[ $rc -ne 0 ] && has "Node password rejected, duplicate hostname"'
printf 'server: https://%s.200:6443\ntoken: %s\n' "$NET" "$TOKEN" | config kx1
out=$(install kx1 server); rc=$?
check "joining a server without embedded etcd fails" '[ $rc -ne 0 ] && has "not running embedded etcd"'
x kx1 -- sh -c 'cp /usr/local/bin/k3s /root/k3s-amd64 && cat > /usr/local/bin/k3s' < "$HERE/k3s-arm64"
out=$(install kx1 agent); rc=$?
check "k3s-arm64 on an x86_64 host: exec format error" '[ $rc -ne 0 ] && has "Exec format error"'
x kx1 -- sh -c 'mv /root/k3s-amd64 /usr/local/bin/k3s'
x kx1 -- sh -c '/usr/local/bin/k3s-uninstall.sh; /usr/local/bin/k3s-agent-uninstall.sh' >/dev/null 2>&1

echo "== 4b. service managers: openrc as install.sh drives it; neither is refused before any change"
"$F" service kx1 openrc >/dev/null
push kx1
printf 'server: https://%s.200:6443\ntoken: %s\n' "$NET" "$TOKEN" | config kx1
out=$(install kx1 agent); rc=$?
check "openrc: agent installed with /etc/init.d/k3s-agent and /etc/rancher/k3s/k3s-agent.env" \
    '[ $rc -eq 0 ] && has "openrc: Starting k3s-agent" && x kx1 -- test -x /etc/init.d/k3s-agent && x kx1 -- test -f /etc/rancher/k3s/k3s-agent.env && ! x kx1 -- test -e /etc/systemd/system/k3s-agent.service' || echo "$out"
check "openrc: enabled in the default runlevel, started" \
    'x kx1 -- test -L /etc/runlevels/default/k3s-agent && wait_for 10 "x kx1 -- rc-service k3s-agent status >/dev/null"'
check "openrc: kx1 joined" 'wait_for 15 "ready_names kd1 | grep -q kx1:True"'
x kx1 -- rc-service k3s-agent stop >/dev/null
out=$(install kx1 agent); rc=$?
check "openrc: unchanged stopped service not started (restart rule)" \
    '[ $rc -eq 0 ] && has "No change detected" && ! x kx1 -- rc-service k3s-agent status >/dev/null'
out=$(x kx1 -- /usr/local/bin/k3s-agent-uninstall.sh 2>&1); rc=$?
x kd1 -- kubectl delete node kx1 >/dev/null
check "openrc: uninstall removes the init script and the runlevel link" \
    '[ $rc -eq 0 ] && ! x kx1 -- test -e /etc/init.d/k3s-agent && ! x kx1 -- test -e /etc/runlevels/default/k3s-agent && ! x kx1 -- test -e /usr/local/bin/k3s'
x kx1 -- sh -c 'cat > /usr/local/bin/k3s && chmod 755 /usr/local/bin/k3s' < "$HERE/k3s"
"$F" service kx1 none >/dev/null
out=$(install kx1 agent); rc=$?
check "neither systemd nor openrc: refused before any change" \
    '[ $rc -ne 0 ] && has "neither openrc" && ! x kx1 -- test -e /usr/local/bin/k3s-killall.sh'
"$F" service kx1 systemd >/dev/null

echo "== 5. HA: 3 servers, cluster-init on the first; cluster-cidr mismatch rejected"
printf 'cluster-init: true\ntoken: ha-shared-secret\ntls-san:\n  - k3s.example.test\n' | config kh1
out=$(install kh1 server); rc=$?
check "kh1 (cluster-init) up" '[ $rc -eq 0 ]' || echo "$out"
for h in kh2 kh3; do
    printf 'server: https://%s.203:6443\ntoken: ha-shared-secret\ntls-san:\n  - k3s.example.test\n' "$NET" | config $h
    out=$(install $h server); rc=$?
    check "$h joined" '[ $rc -eq 0 ]' || echo "$out"
done
for h in kh1 kh2 kh3; do
    check "$h lists 3 Ready servers" 'wait_for 10 "[ \"\$(ready_names $h)\" = \"kh1:True kh2:True kh3:True \" ]"'
done
x kh2 -- k3s kubectl get nodes | sed 's/^/      /'
check "same token file on all servers" '[ "$(x kh1 -- cat /var/lib/rancher/k3s/server/token)" = "$(x kh3 -- cat /var/lib/rancher/k3s/server/token)" ]'
printf 'server: https://%s.203:6443\ntoken: ha-shared-secret\ncluster-cidr: 10.99.0.0/16\n' "$NET" | config kh4
out=$(install kh4 server); rc=$?
echo "$out" | tail -n 1 | sed 's/^/      /'
check "kh4 with another cluster-cidr rejected" '[ $rc -ne 0 ] && has "critical configuration value mismatch between servers: cluster-cidr"'
check "secret not printed" '! has ha-shared-secret'

echo "== 6. uninstall leaves no k3s files"
# Uninstall first, then delete the Node: a running agent registers again when its
# Node is deleted under it (the double's kubelet behaviour), so the other order races.
out=$(x kd3 -- /usr/local/bin/k3s-agent-uninstall.sh 2>&1); rc=$?
x kd1 -- kubectl delete node kd3 >/dev/null
left=$(x kd3 -- sh -c 'find / -xdev \( -path /proc -prune \) -o \( -name "*k3s*" -o -name "*rancher*" -o -path /var/lib/kubelet \) -print 2>/dev/null; ls /run | grep k3s; ps -eo args | grep "k3s agent" | grep -v grep')
check "kd3 agent uninstall: nothing left [${left}]" '[ $rc -eq 0 ] && [ -z "$left" ]'
out=$(x kh3 -- /usr/local/bin/k3s-uninstall.sh 2>&1); rc=$?
left=$(x kh3 -- sh -c 'find / -xdev \( -path /proc -prune \) -o \( -name "*k3s*" -o -name "*rancher*" -o -path /var/lib/kubelet \) -print 2>/dev/null; ls /run | grep k3s; ps -eo args | grep "k3s server" | grep -v grep')
check "kh3 server uninstall: nothing left [${left}]" '[ $rc -eq 0 ] && [ -z "$left" ]'

echo "== 7. host stop + up: the boot hook starts k3s again"
"$F" stop kd2 >/dev/null
check "kd2 goes Unknown while its host is stopped" 'wait_for 25 "[ \"\$(ready_names kd1)\" = \"kd1:True kd2:Unknown \" ]"'
"$F" up kd2 "$NET.201" >/dev/null
check "kd2 Ready again after its host restarted" 'wait_for 20 "[ \"\$(ready_names kd1)\" = \"kd1:True kd2:True \" ]"'
"$F" stop kd1 >/dev/null
"$F" up kd1 "$NET.200" >/dev/null
check "server kd1 back after its host restarted, kd2 Ready" 'wait_for 20 "[ \"\$(ready_names kd1 2>/dev/null)\" = \"kd1:True kd2:True \" ]"'
x kd1 -- k3s kubectl get nodes | sed 's/^/      /'

echo "== 8. manifests: file -> objects; a deleted file leaves them; deleting a HelmChart uninstalls"
# Upstream rules: k3s pkg/deploy/controller.go, helm-controller v0.16.5, knative/operator
# (see the block "manifests (issue 10)" in k3s, and docs/k3s.md). km1 runs without
# Traefik, so ingress-nginx holds the node's ports 80/443 (block "node ports 80/443").
M=/var/lib/rancher/k3s/server/manifests
MH=km1; MIP=$NET.208
printf 'disable:\n  - traefik\n' | config $MH
out=$(install $MH server); rc=$?
check "km1 (server without traefik) up" '[ $rc -eq 0 ]' || echo "$out"
x $MH -- sh -c 'mkdir -p /usr/local/lib/continuum-doubles && cat > /usr/local/lib/continuum-doubles/oscar-api' < "$HERE/../oscar-double/oscar-api"
helmchart() { # helmchart NAME CHART VERSION NAMESPACE [VALUES_LINES]
    local v=${5:-}
    [ -n "$v" ] || v='    {}\n'
    printf 'apiVersion: helm.cattle.io/v1\nkind: HelmChart\nmetadata:\n  name: %s\n  namespace: kube-system\nspec:\n  repo: https://example.invalid/charts\n  chart: %s\n  version: %s\n  targetNamespace: %s\n  createNamespace: true\n  valuesContent: |-\n%b' "$1" "$2" "$3" "$4" "$v"
}
oscar_chart() { # oscar_chart PASSWORD [EXTRA_VALUES_LINES] [CHART_VERSION]: a namespace and the OSCAR HelmChart
    printf 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: oscar\n---\napiVersion: helm.cattle.io/v1\nkind: HelmChart\nmetadata:\n  name: oscar\n  namespace: kube-system\nspec:\n  repo: https://grycap.github.io/helm-charts/\n  chart: oscar\n  version: %s\n  targetNamespace: oscar\n  valuesContent: |-\n    authUser: u\n    authPass: %s\n    ingress:\n      create: true\n%b' "${3:-3.6.4}" "$1" "${2:-}"
}
put() { x $MH -- sh -c "cat > $M/$1"; }                 # put FILE < content
k() { x $MH -- k3s kubectl "$@"; }
info() { curl -sk -m 3 -o /dev/null -w '%{http_code}' -u "u:$1" "https://$MIP/system/info"; }
version_of() { curl -sk -m 3 -u "u:$1" "https://$MIP/system/info" | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])'; }
answers() { [ "$(info "$1")" = 200 ]; }
logged() { x $MH -- grep -qF "${1//\"/\\\"}" /var/log/k3s-double/k3s.log; }  # the log quotes " as \"
wait_logged() { local want=$2; wait_for "$1" 'logged "$want"'; }   # wait_logged SECONDS TEXT
info_is() { [ "$(info "$1")" = "$2" ]; }                            # info_is PASSWORD CODE
secret_data() { k -n "$1" get secret "$2" -o json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][sys.argv[1]])' "$3" 2>/dev/null; }
subject() { openssl s_client -connect "$1:443" ${2:+-servername $2} </dev/null 2>/dev/null | openssl x509 -noout -subject 2>/dev/null; }
chart_json() { k -n kube-system get helmchart "$1" -o json 2>/dev/null; }
claimed() { chart_json oscar | grep -q '"wrangler.cattle.io/on-helm-chart-remove"'; }
ks_claimed() { k -n knative-serving get knativeserving knative-serving -o json 2>/dev/null | grep -q '"knativeservings.operator.knative.dev"'; }

helmchart ingress-nginx ingress-nginx 4.12.1 ingress-nginx | put t-nginx.yaml
oscar_chart p1 | put t-oscar.yaml
check "a manifest file becomes a HelmChart with helm-controller's finalizer" 'wait_for 10 claimed'
check "the object is owned by the file's Addon, which records the file's sha256" \
    'chart_json oscar | grep -q "\"objectset.rio.cattle.io/owner-name\": \"t-oscar\"" && k -n kube-system get addon t-oscar -o json | grep -q "\"checksum\": \"$(x $MH -- sha256sum $M/t-oscar.yaml | cut -d" " -f1)\""'
check "the OSCAR chart installed: its API double answers over https through ingress-nginx" 'wait_for 10 "answers p1"'
check "OSCAR reports its image.tag (chart 3.6.4's default: 3.6.4)" '[ "$(version_of p1)" = 3.6.4 ]'
check "ingress-nginx serves its own certificate (no default-ssl-certificate)" \
    'subject $MIP | grep -q "Kubernetes Ingress Controller Fake Certificate"'
check "http is served too (an Ingress without tls: no redirect)" \
    '[ "$(curl -s -m 3 -o /dev/null -w %{http_code} -u u:p1 http://$MIP/system/info)" = 200 ]'
oscar_chart p2 | put t-oscar.yaml
check "editing the file updates the object and upgrades the release" \
    'wait_for 10 "answers p2" && chart_json oscar | grep -q "authPass: p2"'
x $MH -- rm -f $M/t-oscar.yaml
sleep 3
check "deleting the file leaves the HelmChart, the namespace and OSCAR" \
    '[ "$(k -n kube-system get helmchart oscar -o name)" = helmchart.helm.cattle.io/oscar ] && [ "$(k get ns oscar -o name)" = namespace/oscar ] && answers p2'
out=$(k -n kube-system get helmcharts 2>&1)
check "get helmcharts prints the CRD's printer columns" 'has "JOB" && has "TARGETNAMESPACE" && has "helm-install-oscar"'
out=$(k -n kube-system delete helmchart oscar 2>&1); rc=$?
check "delete helmchart waits for the uninstall (finalizer); OSCAR stops (the ingress answers 404)" \
    '[ $rc -eq 0 ] && [ "$out" = "helmchart.helm.cattle.io \"oscar\" deleted" ] && [ "$(info p2)" = 404 ]'
out=$(k -n kube-system get helmchart oscar 2>&1); rc=$?
check "a deleted HelmChart: NotFound, exit 1" \
    '[ $rc -eq 1 ] && [ "$out" = "Error from server (NotFound): helmcharts.helm.cattle.io \"oscar\" not found" ]'
out=$(k -n kube-system delete helmcharts.helm.cattle.io oscar --ignore-not-found --wait=false 2>&1); rc=$?
out2=$(k -n kube-system get helmchart oscar --ignore-not-found -o name 2>&1); rc2=$?
check "--ignore-not-found: nothing printed, exit 0 (delete and get)" \
    '[ $rc -eq 0 ] && [ -z "$out" ] && [ $rc2 -eq 0 ] && [ -z "$out2" ]'
oscar_chart p2 | put t-oscar.yaml
sleep 3
check "an identical file written again is skipped while its Addon remains" '! chart_json oscar >/dev/null'
k -n kube-system delete addon t-oscar >/dev/null
x $MH -- touch $M/t-oscar.yaml
check "once the Addon is deleted, the file is applied again" 'wait_for 10 "answers p2"'
k -n kube-system delete helmchart oscar >/dev/null
k -n kube-system delete addon t-oscar >/dev/null
x $MH -- rm -f $M/t-oscar.yaml
out=$(k delete ns oscar 2>&1); rc=$?
check "a namespace is deleted (after its content)" '[ $rc -eq 0 ] && ! k get ns oscar >/dev/null 2>&1'
# Values keys are checked against the pinned chart versions (stricter than Helm).
oscar_chart p3 '    httproute:\n      create: true\n' | put t-bad.yaml
check "a values key the pinned chart lacks fails the install (httproute on oscar 3.6.4)" \
    'wait_for 10 "logged \"helm-install-oscar failed: values httproute.create are not values of chart oscar 3.6.4\"" && [ "$(info p3)" = 404 ]'
k -n kube-system delete helmchart oscar >/dev/null
x $MH -- rm -f $M/t-bad.yaml
# The Knative operator: its CRD comes and goes with its chart; it drops its finalizer
# on a KnativeServing only while it runs.
kn_files() { # kn_files [CONFIG_FEATURES_LINES]
    printf 'apiVersion: helm.cattle.io/v1\nkind: HelmChart\nmetadata:\n  name: knative-operator\n  namespace: kube-system\nspec:\n  repo: https://knative.github.io/operator\n  chart: knative-operator\n  version: v1.17.2\n  targetNamespace: knative-operator\n  createNamespace: true\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: knative-serving\n---\napiVersion: operator.knative.dev/v1beta1\nkind: KnativeServing\nmetadata:\n  name: knative-serving\n  namespace: knative-serving\nspec:\n  config:\n    config-features:\n      x: "y"\n%b' "${1:-}"
}
kn_files | put t-kn.yaml
check "a KnativeServing is applied once the operator's CRD exists, and gets its finalizer" 'wait_for 15 ks_claimed'
# OSCAR with the Knative backend mounts its RWX volume into every service: Knative's
# webhook refuses that until config-features enables both PVC flags (knative/serving
# k8s_validation.go), and OSCAR answers 500 "Error creating the service: ..." (create.go).
oscar_chart p4 '    serverlessBackend: knative\n    image:\n      tag: "4.1.2"\n' 4.1.2 | put t-oscar.yaml
post() { curl -sk -m 5 -u u:p4 -X POST -d "{\"name\":\"$1\",\"image\":\"alpine\",\"script\":\"echo\"}" -w ' %{http_code}' "https://$MIP/system/services"; }
check "OSCAR 4.1.2 (image.tag) up with the Knative backend" 'wait_for 10 "answers p4" && [ "$(version_of p4)" = 4.1.2 ]'
out=$(post s1)
check "without the PVC feature flags Knative's webhook refuses OSCAR's service: 500" \
    'has "Error creating the service: admission webhook \"validation.webhook.serving.knative.dev\" denied the request" && has "Persistent volume claim support is disabled" && has " 500"' || echo "      $out"
kn_files '      kubernetes.podspec-persistent-volume-claim: "enabled"\n' | put t-kn.yaml
sleep 2
out=$(post s1)
check "with only the claim flag, the write flag is still missing" \
    'has "Persistent volume write support is disabled" && ! has "claim support is disabled" && has " 500"' || echo "      $out"
kn_files '      kubernetes.podspec-persistent-volume-claim: "enabled"\n      kubernetes.podspec-persistent-volume-write: "enabled"\n' | put t-kn.yaml
sleep 2
out=$(post s1)
check "with both flags enabled the service is created (201)" '[ "$out" = " 201" ]' || echo "      $out"
k -n kube-system delete helmchart oscar >/dev/null
x $MH -- rm -f $M/t-oscar.yaml $M/t-kn.yaml
out=$(k -n knative-serving delete knativeservings.operator.knative.dev knative-serving --timeout=10s 2>&1); rc=$?
k -n kube-system delete helmchart knative-operator >/dev/null
out2=$(k -n knative-serving get knativeservings 2>&1); rc2=$?
check "KnativeServing deleted while the operator runs; the chart's uninstall removes the type" \
    '[ $rc -eq 0 ] && [ $rc2 -eq 1 ] && [ "$out2" = "error: the server doesn'"'"'t have a resource type \"knativeservings\"" ]'

echo "== 8b. Secrets; valuesSecrets at k3s v1.31.4; ingress-nginx with a certificate; MinIO's existingSecret"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -keyout "$TMPD/km1.key" -out "$TMPD/km1.crt" \
    -subj /CN=selftest-km1 -addext "subjectAltName=IP:$MIP" 2>/dev/null
tls_secret() { # tls_secret NAME NAMESPACE CRT KEY
    printf 'apiVersion: v1\nkind: Secret\ntype: kubernetes.io/tls\nmetadata:\n  name: %s\n  namespace: %s\ndata:\n  tls.crt: %s\n  tls.key: %s\n' \
        "$1" "$2" "$(base64 -w0 "$3")" "$(base64 -w0 "$4")"
}
{ printf 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: oscar\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: vals\n  namespace: kube-system\nstringData:\n  values.yaml: "authPass: from-secret"\n---\n'
  tls_secret tls1 ingress-nginx "$TMPD/km1.crt" "$TMPD/km1.key"; } | put t-sec.yaml
vals_stored() { [ "$(secret_data kube-system vals values.yaml)" = "$(printf 'authPass: from-secret' | base64 -w0)" ]; }
check "a Secret is stored with stringData merged into data (base64)" 'wait_for 10 vals_stored'
out=$(k -n ingress-nginx get secrets 2>&1)
check "get secrets prints TYPE and DATA" 'has "kubernetes.io/tls" && has "TYPE" && has "DATA"'
printf 'apiVersion: v1\nkind: Secret\ntype: kubernetes.io/tls\nmetadata:\n  name: half\n  namespace: kube-system\nstringData:\n  tls.crt: x\n' | put t-half.yaml
check "a kubernetes.io/tls Secret without tls.key is refused (the file fails)" \
    'wait_logged 10 "Secret \"half\" is invalid: data[tls.key]: Required value"'
x $MH -- rm -f $M/t-half.yaml
oscar_chart from-content '' 3.6.4 | sed 's/^  valuesContent:/  valuesSecrets:\n    - name: vals\n      keys: [values.yaml]\n  valuesContent:/' | put t-oscar.yaml
check "k3s v1.31.4 (helm-controller v0.16.5) prunes spec.valuesSecrets, with the API server's warning" \
    'wait_logged 10 "HelmChart oscar: unknown field \"spec.valuesSecrets\"" && ! chart_json oscar | grep -q valuesSecrets'
check "so OSCAR runs with valuesContent's password, not the Secret's" 'wait_for 10 "answers from-content" && [ "$(info from-secret)" = 401 ]'
helmchart ingress-nginx ingress-nginx 4.12.1 ingress-nginx \
    '    controller:\n      extraArgs:\n        default-ssl-certificate: ingress-nginx/tls1\n      config:\n        force-ssl-redirect: "true"\n' | put t-nginx.yaml
check "default-ssl-certificate: ingress-nginx serves the Secret's certificate" \
    'wait_for 10 "subject $MIP | grep -q selftest-km1" && answers from-content'
out=$(curl -s -m 3 -o /dev/null -w '%{http_code} %{redirect_url}' "http://$MIP/system/info/")
check "force-ssl-redirect: http is redirected with 308 (trailing slash dropped)" '[ "$out" = "308 https://$MIP/system/info" ]' || echo "      $out"
out=$(k -n kube-system delete secret vals 2>&1); rc=$?
check "delete secret prints secret \"NAME\" deleted" '[ $rc -eq 0 ] && [ "$out" = "secret \"vals\" deleted" ]'
out=$(k -n kube-system get secret vals 2>&1); rc=$?
check "a deleted Secret: NotFound" '[ $rc -eq 1 ] && [ "$out" = "Error from server (NotFound): secrets \"vals\" not found" ]'
helmchart minio minio 5.4.0 minio '    existingSecret: root\n' | put t-minio.yaml
check "MinIO with existingSecret and no such Secret: its pod cannot start" \
    'wait_logged 10 "minio (double): pod in minio CreateContainerConfigError: secret \"root\" not found"'
printf 'apiVersion: v1\nkind: Secret\nmetadata:\n  name: root\n  namespace: minio\nstringData:\n  rootUser: admin\n  rootPassword: password123\n' | put t-root.yaml
check "once the Secret has rootUser and rootPassword, MinIO runs" 'wait_logged 10 "minio (double): pod in minio running"'
for c in oscar ingress-nginx minio; do k -n kube-system delete helmchart $c >/dev/null; done
check "without ingress-nginx nothing listens on the node's port 443" '[ "$(info from-content)" = 000 ]'

echo "== 9. k3s v1.32.4: valuesSecrets merged over valuesContent; OSCAR through Traefik's Gateway"
MH=km2; MIP=$NET.209
sed 's/^K3S_VERSION = "[^"]*"/K3S_VERSION = "v1.32.4+k3s1"/' "$HERE/k3s" > "$TMPD/k3s-v1.32.4"
x $MH -- sh -c 'cat > /usr/local/bin/k3s && chmod 755 /usr/local/bin/k3s' < "$TMPD/k3s-v1.32.4"
out=$(install $MH server); rc=$?
check "km2 (k3s v1.32.4 double, Traefik on) up" '[ $rc -eq 0 ] && x $MH -- k3s --version | grep -q v1.32.4' || echo "$out"
x $MH -- sh -c 'mkdir -p /usr/local/lib/continuum-doubles && cat > /usr/local/lib/continuum-doubles/oscar-api' < "$HERE/../oscar-double/oscar-api"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -keyout "$TMPD/km2.key" -out "$TMPD/km2.crt" \
    -subj /CN=selftest-km2 -addext "subjectAltName=IP:$MIP" 2>/dev/null
http80() { [ "$(curl -s -m 3 -o /dev/null -w '%{http_code}' "http://$MIP/")" = "$1" ]; }
check "Traefik holds port 80 and answers 404 for what it does not route" 'wait_for 10 "http80 404"'
gateway() { # gateway FROM [PORT] [SECRET]
    printf 'apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: gw\n  namespace: kube-system\nspec:\n  gatewayClassName: traefik\n  listeners:\n    - name: websecure\n      port: %s\n      protocol: HTTPS\n      tls:\n        mode: Terminate\n        certificateRefs:\n          - kind: Secret\n            name: %s\n      allowedRoutes:\n        namespaces:\n          from: %s\n' "${2:-8443}" "${3:-gwtls}" "$1"
}
{ printf 'apiVersion: helm.cattle.io/v1\nkind: HelmChartConfig\nmetadata:\n  name: traefik\n  namespace: kube-system\nspec:\n  valuesContent: |-\n    providers:\n      kubernetesGateway:\n        enabled: true\n    gateway:\n      enabled: false\n---\n'
  tls_secret gwtls kube-system "$TMPD/km2.crt" "$TMPD/km2.key"
  printf -- '---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: vals\n  namespace: kube-system\nstringData:\n  values.yaml: "authPass: from-secret"\n'; } | put t-gw.yaml
gateway All | put t-gw2.yaml
oscar_chart from-content '    image:\n      tag: "4.1.2"\n    httproute:\n      create: true\n      gateway:\n        name: gw\n        namespace: kube-system\n' 4.1.2 \
    | sed 's/^  valuesContent:/  valuesSecrets:\n    - name: vals\n      keys: [values.yaml]\n  valuesContent:/' | put t-oscar.yaml
check "valuesSecrets: the Secret's values win over valuesContent (helm-controller v0.16.10)" \
    'wait_for 15 "answers from-secret" && [ "$(info from-content)" = 401 ] && chart_json oscar | grep -q valuesSecrets'
check "OSCAR is served through the Gateway's HTTPS listener with the listener's certificate (by IP)" \
    'subject $MIP | grep -q selftest-km2 && [ "$(version_of from-secret)" = 4.1.2 ]'
check "a client naming another host (SNI) gets Traefik's default certificate" \
    'subject $MIP other.example | grep -q "TRAEFIK DEFAULT CERT"'
gateway Same | put t-gw2.yaml
check "allowedRoutes from Same: the route in namespace oscar is not attached (404)" \
    'wait_for 10 "info_is from-secret 404"'
gateway All 443 | put t-gw2.yaml
check "a listener on a port that is no entry point is refused (Cannot find entryPoint)" \
    'wait_logged 10 "Cannot find entryPoint for Gateway: no matching entryPoint for port 443 and protocol \"HTTPS\"" && info_is from-secret 404'
gateway All 8443 nosuch | put t-gw2.yaml
check "a listener whose certificate Secret does not exist serves nothing (InvalidCertificateRef)" \
    'wait_logged 10 "InvalidCertificateRef: secret \"nosuch\" not found" && info_is from-secret 404'
gateway All | put t-gw2.yaml
check "back to a valid listener: served again" 'wait_for 10 "answers from-secret"'
k -n kube-system delete secret vals >/dev/null
oscar_chart other '    image:\n      tag: "4.1.2"\n' 4.1.2 \
    | sed 's/^  valuesContent:/  valuesSecrets:\n    - name: vals\n      keys: [values.yaml]\n  valuesContent:/' | put t-oscar.yaml
check "a valuesSecrets Secret that does not exist: the install job cannot start, the release stays" \
    'wait_logged 10 "helm-install-oscar failed: MountVolume.SetUp failed for volume \"values\" : secret \"vals\" not found" && answers from-secret'
x $MH -- rm -f $M/t-gw2.yaml
out=$(k -n kube-system delete gateway gw 2>&1); rc=$?
check "delete gateway prints gateway.gateway.networking.k8s.io \"gw\" deleted; OSCAR unrouted" \
    '[ $rc -eq 0 ] && [ "$out" = "gateway.gateway.networking.k8s.io \"gw\" deleted" ] && wait_for 10 "info_is from-secret 404"'

if [ "${KEEP:-0}" != 1 ]; then
    for hp in "${HOSTS[@]}"; do "$F" down "${hp%:*}" >/dev/null 2>&1 || true; done
fi
echo "== $FAILS failure(s)"
[ "$FAILS" -eq 0 ]
