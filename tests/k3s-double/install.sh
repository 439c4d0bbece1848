#!/bin/sh
# k3s TEST DOUBLE install script -- this is NOT the real get.k3s.io script.
# It stands in for it in continuum's end-to-end tests (air-gap only: it never
# downloads anything) and enforces the contract of docs/k3s.md strictly. It drives
# the host's service manager (systemd or openrc; on the test fleet, the doubles of
# tests/fleet/doubles) as the real script does. See tests/k3s-double/README.md.
set -e
set -o noglob

DOUBLE_K3S_VERSION=v1.31.4+k3s1

info() { echo '[INFO] ' "$@"; }
warn() { echo '[WARN] ' "$@" >&2; }
fatal() { echo '[ERROR] ' "$@" >&2; exit 1; }

# --- strict environment: only the variables the real script understands ------------------
KNOWN_VARS=" INSTALL_K3S_VERSION INSTALL_K3S_CHANNEL INSTALL_K3S_EXEC INSTALL_K3S_SKIP_DOWNLOAD \
INSTALL_K3S_SKIP_START INSTALL_K3S_SKIP_ENABLE INSTALL_K3S_FORCE_RESTART INSTALL_K3S_BIN_DIR \
INSTALL_K3S_SYMLINK K3S_URL K3S_TOKEN K3S_TOKEN_FILE "
SET_VARS=$(env | sed -n 's/^\(INSTALL_K3S_[A-Za-z0-9_]*\)=.*/\1/p; s/^\(K3S_[A-Za-z0-9_]*\)=.*/\1/p' | sort -u)
for v in $SET_VARS; do
    case "$KNOWN_VARS" in
        *" $v "*) ;;
        *) fatal "double: unknown variable $v" ;;
    esac
done

# --- root (the real script prefixes commands with sudo; the double re-executes itself) ---
if [ "$(id -u)" -ne 0 ]; then
    [ -f "$0" ] || fatal "double: run install.sh as root, or from a file so it can re-run itself with sudo"
    keep=$(echo $SET_VARS | tr ' ' ',')
    exec sudo -n ${keep:+--preserve-env=$keep} sh "$0" "$@"
fi

# --- service manager, decided before anything is written, in the real script's order:
# openrc when /sbin/openrc-run is executable, else systemd when /bin/systemctl is or
# systemctl is on PATH, else a fatal error (k3s-io/k3s install.sh `verify_system`,
# docs/k3s.md "Service managers").
HAS_OPENRC=false
HAS_SYSTEMD=false
if [ -x /sbin/openrc-run ]; then
    HAS_OPENRC=true
elif [ -x /bin/systemctl ] || command -v systemctl >/dev/null 2>&1; then
    HAS_SYSTEMD=true
else
    fatal "double: this host has neither openrc (/sbin/openrc-run) nor systemd (systemctl) to supervise k3s"
fi

# --- quoting (the double's own) ---------------------------------------------------------
# sq WORD: WORD as one single-quoted sh word; a quote inside becomes '"'"'.
sq() {
    printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\"'\"'/g")"
}

# write_if_changed MODE TARGET  (content on stdin). Never rewrites identical content,
# so a second identical run changes no mtime. Sets CHANGED=true when it wrote.
write_if_changed() {
    _mode=$1; _target=$2
    mkdir -p "$(dirname "$_target")"
    _tmp=$(mktemp)    # in /tmp: creating it next to the target would bump the directory mtime
    cat > "$_tmp"
    if [ -f "$_target" ] && [ ! -L "$_target" ] && cmp -s "$_tmp" "$_target"; then
        rm -f "$_tmp"
        [ "$(stat -c %a "$_target")" = "$(echo "$_mode" | sed 's/^0*//')" ] || chmod "$_mode" "$_target"
        return 0
    fi
    (umask 077; cat "$_tmp" > "$_target.double-new")
    rm -f "$_tmp"
    chmod "$_mode" "$_target.double-new"
    mv -f "$_target.double-new" "$_target"
    CHANGED=true
}

# --- setup_env --------------------------------------------------------------------------
# The command line, as the real script builds it: the words of INSTALL_K3S_EXEC (blanks
# separate them, quotes group them; other shell syntax is taken literally) followed by
# the script's own arguments unchanged (docs/k3s.md, "Install script").
exec_words=$(printf '%s' "${INSTALL_K3S_EXEC}" | sed 's/[][!#$%&()*;<=>?\\_`{|}]/\\&/g')
own_words=""
for a in "$@"; do own_words="$own_words $(sq "$a")"; done
eval "set -- $exec_words $own_words"

case "$1" in
    (-*|"")
        if [ -z "${K3S_URL}" ]; then
            CMD_K3S=server
        else
            if [ -z "${K3S_TOKEN}" ] && [ -z "${K3S_TOKEN_FILE}" ]; then
                fatal "Defaulted k3s exec command to 'agent' because K3S_URL is defined, but K3S_TOKEN or K3S_TOKEN_FILE is not defined."
            fi
            CMD_K3S=agent
        fi
        ;;
    (server|agent)
        CMD_K3S=$1
        shift
        ;;
    (*)
        fatal "double: unsupported k3s command '$1' (server or agent)"
        ;;
esac

case "${K3S_URL}" in
    "") ;;
    https://*) ;;
    *) fatal "Only https:// URLs are supported for K3S_URL (have ${K3S_URL})" ;;
esac

# ExecStart continuation lines: one quoted argument a line. openrc's command_args: the
# same words on one line (the shell that starts the service splits and evaluates them).
CMD_K3S_EXEC="${CMD_K3S}"
RC_ARGS="${CMD_K3S}"
for a in "$@"; do
    CMD_K3S_EXEC="${CMD_K3S_EXEC} \\
	$(sq "$a")"
    RC_ARGS="${RC_ARGS} $(sq "$a" | sed 's/["$`\\]/\\&/g')"
done

if [ "${CMD_K3S}" = server ]; then
    SYSTEM_NAME=k3s
    UNINSTALL_NAME=k3s-uninstall.sh
else
    SYSTEM_NAME=k3s-${CMD_K3S}
    UNINSTALL_NAME=k3s-${CMD_K3S}-uninstall.sh
fi
# The binary directory, as the real script chooses it: INSTALL_K3S_BIN_DIR, else
# /usr/local/bin when root can write it, else /opt/bin when it exists (docs/k3s.md,
# "Binary directory").
if [ -n "${INSTALL_K3S_BIN_DIR}" ]; then
    BIN_DIR=${INSTALL_K3S_BIN_DIR}
else
    BIN_DIR=/usr/local/bin
    # (The real script probes by touching and removing BIN_DIR/k3s-ro-test; `-w` gives
    # root the same answer without bumping the directory's mtime, which the double
    # promises never to change on an identical re-run.)
    if [ ! -w "${BIN_DIR}" ] && [ -d /opt/bin ]; then
        BIN_DIR=/opt/bin
    fi
fi
# Service and env files per service manager (install.sh `setup_env`): systemd keeps both
# in /etc/systemd/system, openrc has /etc/init.d/NAME and /etc/rancher/k3s/NAME.env.
if [ "${HAS_SYSTEMD}" = true ]; then
    FILE_K3S_SERVICE=/etc/systemd/system/${SYSTEM_NAME}.service
    FILE_K3S_ENV=/etc/systemd/system/${SYSTEM_NAME}.service.env
else
    mkdir -p /etc/rancher/k3s
    FILE_K3S_SERVICE=/etc/init.d/${SYSTEM_NAME}
    FILE_K3S_ENV=/etc/rancher/k3s/${SYSTEM_NAME}.env
fi
LOG_FILE=/var/log/${SYSTEM_NAME}.log   # openrc only: the service's output
KILLALL_K3S_SH=${BIN_DIR}/k3s-killall.sh
UNINSTALL_K3S_SH=${BIN_DIR}/${UNINSTALL_NAME}

# Restart rule of the real script: it hashes the binary, the unit and its env file
# before it writes anything, and (re)starts the service only when they changed during
# its own run, or with INSTALL_K3S_FORCE_RESTART=true. A binary put in place before the
# run (the air-gap way) is no change, and an unchanged, stopped service is not started
# (docs/k3s.md, "Restart rule").
hashes_now() { sha256sum "${BIN_DIR}/k3s" "${FILE_K3S_SERVICE}" "${FILE_K3S_ENV}" 2>&1 || true; }
PRE_INSTALL_HASHES=$(hashes_now)

case "${INSTALL_K3S_SYMLINK}" in
    ""|skip|force) ;;
    *) fatal "double: INSTALL_K3S_SYMLINK must be skip or force (have ${INSTALL_K3S_SYMLINK})" ;;
esac
for v in INSTALL_K3S_SKIP_DOWNLOAD INSTALL_K3S_SKIP_START INSTALL_K3S_SKIP_ENABLE INSTALL_K3S_FORCE_RESTART; do
    eval "val=\${$v}"
    case "$val" in
        ""|true|false) ;;
        *) fatal "double: $v must be true or false (have $val)" ;;
    esac
done
case "${INSTALL_K3S_CHANNEL}" in
    ""|stable|latest|testing|v1.[0-9]*) ;;
    *) fatal "double: unknown INSTALL_K3S_CHANNEL ${INSTALL_K3S_CHANNEL}" ;;
esac

# --- binary (air-gap only) ----------------------------------------------------------------
if [ "${INSTALL_K3S_SKIP_DOWNLOAD}" != true ]; then
    fatal "double: cannot download k3s (no network); put the binary in ${BIN_DIR}/k3s and set INSTALL_K3S_SKIP_DOWNLOAD=true"
fi
info 'Skipping k3s download and verify'
[ -f "${BIN_DIR}/k3s" ] && [ -x "${BIN_DIR}/k3s" ] || \
    fatal "double: ${BIN_DIR}/k3s is missing or not executable (INSTALL_K3S_SKIP_DOWNLOAD=true needs the binary in place)"
BIN_VERSION_LINE=$("${BIN_DIR}/k3s" --version 2>&1 | head -n 1) || fatal "double: ${BIN_DIR}/k3s does not run here: ${BIN_VERSION_LINE}"
BIN_VERSION=$(echo "${BIN_VERSION_LINE}" | sed -n 's/^k3s version \([^ ]*\).*/\1/p')
[ -n "${BIN_VERSION}" ] || fatal "double: ${BIN_DIR}/k3s does not run here: ${BIN_VERSION_LINE}"
if [ -n "${INSTALL_K3S_VERSION}" ]; then
    echo "${INSTALL_K3S_VERSION}" | grep -Eq '^v[0-9]+\.[0-9]+\.[0-9]+(-rc[0-9]+)?\+k3s[0-9]+$' || \
        fatal "double: INSTALL_K3S_VERSION ${INSTALL_K3S_VERSION} is not a k3s version like ${DOUBLE_K3S_VERSION}"
    [ "${INSTALL_K3S_VERSION}" = "${BIN_VERSION}" ] || \
        fatal "double: INSTALL_K3S_VERSION=${INSTALL_K3S_VERSION} but ${BIN_DIR}/k3s is ${BIN_VERSION} (the double cannot download another version)"
fi

# --- symlinks -------------------------------------------------------------------------------
if [ "${INSTALL_K3S_SYMLINK}" != skip ]; then
    for cmd in kubectl crictl ctr; do
        if [ ! -e "${BIN_DIR}/${cmd}" ] && [ ! -L "${BIN_DIR}/${cmd}" ] || [ "${INSTALL_K3S_SYMLINK}" = force ]; then
            which_cmd=$(command -v "${cmd}" 2>/dev/null || true)
            if [ -z "${which_cmd}" ] || [ "${INSTALL_K3S_SYMLINK}" = force ]; then
                if [ "$(readlink "${BIN_DIR}/${cmd}" 2>/dev/null)" != k3s ]; then
                    info "Creating ${BIN_DIR}/${cmd} symlink to k3s"
                    ln -sf k3s "${BIN_DIR}/${cmd}"
                fi
            else
                info "Skipping ${BIN_DIR}/${cmd} symlink to k3s, command exists in PATH at ${which_cmd}"
            fi
        else
            info "Skipping ${BIN_DIR}/${cmd} symlink to k3s, already exists"
        fi
    done
fi

# --- killall script -----------------------------------------------------------------------------
info "Creating killall script ${KILLALL_K3S_SH}"
write_if_changed 0755 "${KILLALL_K3S_SH}" <<EOF
#!/bin/sh
# k3s TEST DOUBLE k3s-killall.sh (written by tests/k3s-double/install.sh) -- NOT the real script.
[ \$(id -u) -eq 0 ] || exec sudo \$0 \$@
for service in /etc/systemd/system/k3s*.service; do
    [ -s "\$service" ] && systemctl stop "\$(basename "\$service")"
done
for service in /etc/init.d/k3s*; do
    [ -x "\$service" ] && "\$service" stop
done
# any k3s double daemon left (started by hand, or a unit whose file is gone)
for p in /proc/[0-9]*; do
    cmd=\$( { tr '\\000' ' ' < "\$p/cmdline"; } 2>/dev/null) || continue
    case "\$cmd" in
        *"${BIN_DIR}/k3s server"*|*"${BIN_DIR}/k3s agent"*) kill -9 "\${p#/proc/}" 2>/dev/null || true ;;
    esac
done
rm -rf /run/k3s
EOF

# --- uninstall script ------------------------------------------------------------------------
info "Creating uninstall script ${UNINSTALL_K3S_SH}"
write_if_changed 0755 "${UNINSTALL_K3S_SH}" <<EOF
#!/bin/sh
# k3s TEST DOUBLE ${UNINSTALL_NAME} (written by tests/k3s-double/install.sh) -- NOT the real script.
set -x
[ \$(id -u) -eq 0 ] || exec sudo \$0 \$@

${KILLALL_K3S_SH}

if command -v systemctl >/dev/null; then
    systemctl disable ${SYSTEM_NAME}
    systemctl reset-failed ${SYSTEM_NAME}
    systemctl daemon-reload
fi
if command -v rc-update >/dev/null; then
    rc-update delete ${SYSTEM_NAME} default
fi

rm -f ${FILE_K3S_SERVICE}
rm -f ${FILE_K3S_ENV}

remove_uninstall() {
    rm -f ${UNINSTALL_K3S_SH}
}
trap remove_uninstall EXIT

if (ls /etc/systemd/system/k3s*.service || ls /etc/init.d/k3s*) >/dev/null 2>&1; then
    set +x; echo 'Additional k3s services installed, skipping uninstall of k3s'; set -x
    exit
fi

for cmd in kubectl crictl ctr; do
    if [ -L ${BIN_DIR}/\$cmd ]; then
        rm -f ${BIN_DIR}/\$cmd
    fi
done

rm -rf /etc/rancher/k3s
rm -rf /etc/rancher/node
rm -rf /run/k3s
rm -rf /run/k3s-double
rm -rf /var/log/k3s-double
rm -rf /var/lib/rancher/k3s
rm -rf /var/lib/kubelet
rm -f ${BIN_DIR}/k3s
rm -f ${KILLALL_K3S_SH}
rmdir /etc/rancher /var/lib/rancher 2>/dev/null || true
rmdir /etc/systemd/system/multi-user.target.wants /etc/systemd/system /etc/systemd 2>/dev/null || true
EOF

# --- env file + unit --------------------------------------------------------------------------
info "env: Creating environment file ${FILE_K3S_ENV}"
ENV_TMP=$(mktemp)
for v in K3S_TOKEN K3S_TOKEN_FILE K3S_URL; do
    eval "val=\${$v-__unset__}"
    [ "$val" = __unset__ ] || printf "%s=%s\n" "$v" "$(sq "$val")"
done > "$ENV_TMP"
write_if_changed 0600 "${FILE_K3S_ENV}" < "$ENV_TMP"
rm -f "$ENV_TMP"

if [ "${HAS_SYSTEMD}" = true ]; then
info "systemd: Creating service file ${FILE_K3S_SERVICE}"
write_if_changed 0644 "${FILE_K3S_SERVICE}" <<EOF
# k3s TEST DOUBLE unit written by tests/k3s-double/install.sh (same shape as the real one)
[Unit]
Description=Lightweight Kubernetes
Documentation=https://k3s.io
Wants=network-online.target
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
Type=notify
EnvironmentFile=-/etc/default/%N
EnvironmentFile=-/etc/sysconfig/%N
EnvironmentFile=-${FILE_K3S_ENV}
KillMode=process
Delegate=yes
User=root
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecStartPre=/bin/sh -xc '! /usr/bin/systemctl is-enabled --quiet nm-cloud-setup.service 2>/dev/null'
ExecStartPre=-/sbin/modprobe br_netfilter
ExecStartPre=-/sbin/modprobe overlay
ExecStart=${BIN_DIR}/k3s \\
    ${CMD_K3S_EXEC}

EOF
else
# The init script, in the shape the real script writes (install.sh
# `create_openrc_service_file`): openrc-run shebang, supervise-daemon, the k3s command
# with its output appended to LOG_FILE, a pid file, and the env file sourced with
# allexport. A logrotate entry for LOG_FILE beside it.
info "openrc: Creating service file ${FILE_K3S_SERVICE}"
write_if_changed 0755 "${FILE_K3S_SERVICE}" <<EOF
#!/sbin/openrc-run
# k3s TEST DOUBLE init script written by tests/k3s-double/install.sh (real script's shape)

depend() {
    after network-online
    want cgroups
}

start_pre() {
    rm -f /tmp/k3s.*
}

name=${SYSTEM_NAME}
supervisor=supervise-daemon
pidfile="/var/run/${SYSTEM_NAME}.pid"
command="${BIN_DIR}/k3s"
command_args="${RC_ARGS}
    >>${LOG_FILE} 2>&1"
output_log=${LOG_FILE}
error_log=${LOG_FILE}
respawn_delay=5
respawn_max=0

set -o allexport
[ -f /etc/environment ] && . /etc/environment
[ -f ${FILE_K3S_ENV} ] && . ${FILE_K3S_ENV}
set +o allexport
EOF
write_if_changed 0644 "/etc/logrotate.d/${SYSTEM_NAME}" <<EOF
${LOG_FILE} {
	missingok
	notifempty
	copytruncate
}
EOF
fi

# --- enable and start -------------------------------------------------------------------------
if [ -f /proc/cgroups ] && [ "$(grep memory /proc/cgroups | while read -r n n n enabled; do echo $enabled; done)" = 0 ]; then
    info 'Failed to find memory cgroup, you may need to add "cgroup_memory=1 cgroup_enable=memory" to your linux cmdline (/boot/cmdline.txt on a Raspberry Pi)'
fi

[ "${INSTALL_K3S_SKIP_ENABLE}" = true ] && exit 0

if [ "${HAS_SYSTEMD}" = true ]; then
    info "systemd: Enabling ${SYSTEM_NAME} unit"
    systemctl enable "${FILE_K3S_SERVICE}" >/dev/null 2>&1 || fatal "systemctl enable ${SYSTEM_NAME} failed"
    systemctl daemon-reload >/dev/null
else
    info "openrc: Enabling ${SYSTEM_NAME} service for default runlevel"
    rc-update add "${SYSTEM_NAME}" default >/dev/null 2>&1 || fatal "rc-update add ${SYSTEM_NAME} failed"
fi

[ "${INSTALL_K3S_SKIP_START}" = true ] && exit 0

POST_INSTALL_HASHES=$(hashes_now)
if [ "${PRE_INSTALL_HASHES}" = "${POST_INSTALL_HASHES}" ] && [ "${INSTALL_K3S_FORCE_RESTART}" != true ]; then
    info 'No change detected so skipping service start'
    exit 0
fi
# systemd (Type=notify) returns once k3s is up; openrc returns once it is spawned.
if [ "${HAS_SYSTEMD}" = true ]; then
    info "systemd: Starting ${SYSTEM_NAME}"
    systemctl restart "${SYSTEM_NAME}" || fatal "double: ${SYSTEM_NAME} failed to start (see above)"
else
    info "openrc: Starting ${SYSTEM_NAME}"
    "${FILE_K3S_SERVICE}" restart || fatal "double: ${SYSTEM_NAME} failed to start (see above)"
fi
