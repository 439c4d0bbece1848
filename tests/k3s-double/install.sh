#!/bin/sh
# k3s TEST DOUBLE install script -- this is NOT the real get.k3s.io script.
# It stands in for it in continuum's end-to-end tests (air-gap only: it never
# downloads anything) and enforces the contract of REFERENCE.md section 1 strictly.
# On hosts without systemd it also installs a systemctl double
# (/usr/local/bin/systemctl) and a fleet boot hook (/etc/fleet/boot.d/k3s-double).
# See tests/k3s-double/README.md.
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

# ExecStart continuation lines: one quoted argument a line.
CMD_K3S_EXEC="${CMD_K3S}"
for a in "$@"; do
    CMD_K3S_EXEC="${CMD_K3S_EXEC} \\
	$(sq "$a")"
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
FILE_K3S_SERVICE=/etc/systemd/system/${SYSTEM_NAME}.service
FILE_K3S_ENV=/etc/systemd/system/${SYSTEM_NAME}.service.env
KILLALL_K3S_SH=${BIN_DIR}/k3s-killall.sh
UNINSTALL_K3S_SH=${BIN_DIR}/${UNINSTALL_NAME}
# The systemctl double goes where PATH finds it; /usr/sbin when /usr/local/bin is
# read-only (a test-fleet device without systemd: nothing to mirror upstream here).
SHIM=/usr/local/bin/systemctl
[ -w /usr/local/bin ] || SHIM=/usr/sbin/systemctl
BOOT_HOOK=/etc/fleet/boot.d/k3s-double

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

# --- service manager ------------------------------------------------------------------------
if [ -x /bin/systemctl ] || [ -x /usr/bin/systemctl ]; then
    SYSTEMCTL=systemctl
    HAS_SHIM=false
else
    SYSTEMCTL=$SHIM
    HAS_SHIM=true
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

rm -f ${FILE_K3S_SERVICE}
rm -f ${FILE_K3S_ENV}

remove_uninstall() {
    rm -f ${UNINSTALL_K3S_SH}
}
trap remove_uninstall EXIT

if (ls /etc/systemd/system/k3s*.service) >/dev/null 2>&1; then
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
rm -f ${BOOT_HOOK}
rmdir /etc/rancher /var/lib/rancher 2>/dev/null || true
rmdir /etc/systemd/system/multi-user.target.wants /etc/systemd/system /etc/systemd 2>/dev/null || true
EOF

# --- systemctl double + boot hook (hosts without systemd only) -------------------------------
if [ "${HAS_SHIM}" = true ]; then
    info "systemd not found: installing the systemctl double ${SHIM}"
    write_if_changed 0755 "${SHIM}" <<'SHIM_EOF'
#!/bin/sh
# systemctl TEST DOUBLE (installed by tests/k3s-double/install.sh) -- NOT systemd.
# Emulates the service manager for the k3s and k3s-agent units only:
#   start|stop|restart|is-active|is-enabled|enable|disable|daemon-reload|reset-failed
#   options: -q/--quiet, --now (enable/disable), --no-block (start/restart)
# Daemons run detached (setsid, stdin /dev/null) with the unit's EnvironmentFile(s),
# log to /var/log/k3s-double/UNIT.log, pid in /run/k3s-double/UNIT.pid. Like
# Type=notify, start returns once the daemon writes $DOUBLE_NOTIFY_FILE
# (/run/k3s-double/UNIT.ready), failing on exit or after DOUBLE_START_TIMEOUT (60 s).
set -u
RUN=/run/k3s-double
LOGDIR=/var/log/k3s-double
UNITDIR=/etc/systemd/system
WANTS=$UNITDIR/multi-user.target.wants
TIMEOUT=${DOUBLE_START_TIMEOUT:-60}
ORIG="$*"

unsupported() { echo "systemctl double: unsupported: systemctl $ORIG" >&2; exit 1; }

quiet=false; noblock=false; now=false; verb=""; units=""
for a in "$@"; do
    case "$a" in
        -q|--quiet) quiet=true ;;
        --no-block) noblock=true ;;
        --now) now=true ;;
        -*) unsupported ;;
        *)
            if [ -z "$verb" ]; then verb=$a; continue; fi
            u=${a##*/}; u=${u%.service}
            case "$u" in k3s|k3s-agent) units="$units $u" ;; *) unsupported ;; esac
            ;;
    esac
done

say() { [ "$quiet" = true ] || echo "$@"; }

pid_of() { # the unit's main pid, when it runs (not a zombie; a reused pid is not k3s)
    [ -f "$RUN/$1.pid" ] || return 1
    p=$(cat "$RUN/$1.pid")
    kill -0 "$p" 2>/dev/null || return 1
    state=$( { sed 's/.*) //' "/proc/$p/stat" | cut -d' ' -f1; } 2>/dev/null)
    [ -n "$state" ] && [ "$state" != Z ] || return 1
    case "$( { tr '\000' ' ' < "/proc/$p/cmdline"; } 2>/dev/null)" in
        ""|*k3s*) echo "$p" ;;   # empty while exec'ing
        *) return 1 ;;
    esac
}

hashes() {
    bin=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$UNITDIR/$1.service")
    sha256sum "$bin" "$UNITDIR/$1.service" "$UNITDIR/$1.service.env" 2>&1 || true
}

start_unit() {
    u=$1
    if [ ! -f "$UNITDIR/$u.service" ]; then
        echo "Failed to start $u.service: Unit $u.service not found." >&2
        return 5
    fi
    pid_of "$u" >/dev/null && return 0
    mkdir -p "$RUN" "$LOGDIR"
    rm -f "$RUN/$u.ready"
    log=$LOGDIR/$u.log
    offset=1
    [ -f "$log" ] && offset=$(($(wc -c < "$log") + 1))
    exec_line=$(awk '/^ExecStart=/ { on = 1; sub(/^ExecStart=/, "") }
        on { l = $0; c = sub(/\\$/, "", l); printf "%s ", l; if (!c) exit }' "$UNITDIR/$u.service")
    envfiles=""
    for f in $(sed -n 's/^EnvironmentFile=//p' "$UNITDIR/$u.service" | sed "s/%N/$u/g"); do
        case "$f" in -*) f=${f#-}; [ -f "$f" ] || continue ;; esac
        [ -f "$f" ] || { echo "Failed to start $u.service: EnvironmentFile $f missing" >&2; return 1; }
        envfiles="$envfiles $f"
    done
    echo "--- systemctl double: starting $u.service at $(date -u +%FT%TZ) ---" >> "$log"
    setsid env -i \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
        DOUBLE_NOTIFY_FILE="$RUN/$u.ready" DOUBLE_EXEC="$exec_line" \
        /bin/sh -c 'set -a; for f in "$@"; do . "$f"; done; set +a; eval "exec $DOUBLE_EXEC"' \
        sh $envfiles < /dev/null >> "$log" 2>&1 &
    pid=$!
    echo "$pid" > "$RUN/$u.pid"
    hashes "$u" > "$RUN/$u.started"
    [ "$noblock" = true ] && return 0
    i=0
    while [ "$i" -lt $((TIMEOUT * 5)) ]; do
        [ -f "$RUN/$u.ready" ] && return 0
        if ! pid_of "$u" >/dev/null; then
            echo "Job for $u.service failed because the control process exited with error code." >&2
            echo "systemctl double: $u exited before signalling readiness; last lines of $log:" >&2
            tail -c +"$offset" "$log" | tail -n 25 >&2
            rm -f "$RUN/$u.pid"
            return 1
        fi
        sleep 0.2
        i=$((i + 1))
    done
    echo "Job for $u.service timed out." >&2
    echo "systemctl double: $u did not signal readiness within ${TIMEOUT}s (still running); last lines of $log:" >&2
    tail -c +"$offset" "$log" | tail -n 25 >&2
    return 1
}

stop_unit() {
    u=$1
    if p=$(pid_of "$u"); then
        kill -TERM "$p" 2>/dev/null || true
        i=0
        while pid_of "$u" >/dev/null && [ "$i" -lt 75 ]; do sleep 0.2; i=$((i + 1)); done
        pid_of "$u" >/dev/null && kill -KILL "$p" 2>/dev/null || true
    fi
    rm -f "$RUN/$u.pid" "$RUN/$u.ready" "$RUN/$u.started"
}

rc=0
case "$verb" in
    daemon-reload)
        [ -z "$units" ] || unsupported ;;
    reset-failed) ;;
    start|restart|stop|is-active|is-enabled|enable|disable)
        [ -n "$units" ] || unsupported ;;
    *) unsupported ;;
esac
for u in $units; do
    case "$verb" in
        start) start_unit "$u" || rc=$? ;;
        restart) stop_unit "$u"; start_unit "$u" || rc=$? ;;
        stop) stop_unit "$u" ;;
        is-active)
            if pid_of "$u" >/dev/null; then
                if [ -f "$RUN/$u.ready" ]; then say active; else say activating; rc=3; fi
            else
                say inactive; rc=3
            fi ;;
        is-enabled)
            if [ -L "$WANTS/$u.service" ]; then say enabled
            elif [ -f "$UNITDIR/$u.service" ]; then say disabled; rc=1
            else echo "Failed to get unit file state for $u.service: No such file or directory" >&2; rc=1
            fi ;;
        enable)
            if [ ! -f "$UNITDIR/$u.service" ]; then
                echo "Failed to enable unit: Unit file $u.service does not exist." >&2; rc=1; continue
            fi
            if [ ! -L "$WANTS/$u.service" ]; then
                mkdir -p "$WANTS"
                ln -s "$UNITDIR/$u.service" "$WANTS/$u.service"
                [ "$quiet" = true ] || echo "Created symlink $WANTS/$u.service → $UNITDIR/$u.service." >&2
            fi
            [ "$now" = true ] && { start_unit "$u" || rc=$?; } ;;
        disable)
            [ "$now" = true ] && stop_unit "$u"
            if [ -L "$WANTS/$u.service" ]; then
                rm -f "$WANTS/$u.service"
                [ "$quiet" = true ] || echo "Removed \"$WANTS/$u.service\"." >&2
            fi ;;
    esac
done
exit $rc
SHIM_EOF

    info "Creating fleet boot hook ${BOOT_HOOK}"
    write_if_changed 0755 "${BOOT_HOOK}" <<'HOOK_EOF'
#!/bin/sh
# k3s TEST DOUBLE boot hook (installed by tests/k3s-double/install.sh) -- not part of k3s.
# The test fleet runs every executable in /etc/fleet/boot.d/ when a host boots; this
# starts every enabled k3s unit, as systemd would start enabled services after a reboot.
S=/usr/local/bin/systemctl
[ -x "$S" ] || S=/usr/sbin/systemctl
for u in k3s k3s-agent; do
    if "$S" is-enabled --quiet "$u" 2>/dev/null; then
        "$S" start --no-block "$u" || true
    fi
done
exit 0
HOOK_EOF
fi

# --- env file + unit --------------------------------------------------------------------------
info "env: Creating environment file ${FILE_K3S_ENV}"
ENV_TMP=$(mktemp)
for v in K3S_TOKEN K3S_TOKEN_FILE K3S_URL; do
    eval "val=\${$v-__unset__}"
    [ "$val" = __unset__ ] || printf "%s=%s\n" "$v" "$(sq "$val")"
done > "$ENV_TMP"
write_if_changed 0600 "${FILE_K3S_ENV}" < "$ENV_TMP"
rm -f "$ENV_TMP"

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

# --- enable and start -------------------------------------------------------------------------
if [ -f /proc/cgroups ] && [ "$(grep memory /proc/cgroups | while read -r n n n enabled; do echo $enabled; done)" = 0 ]; then
    info 'Failed to find memory cgroup, you may need to add "cgroup_memory=1 cgroup_enable=memory" to your linux cmdline (/boot/cmdline.txt on a Raspberry Pi)'
fi

[ "${INSTALL_K3S_SKIP_ENABLE}" = true ] && exit 0

info "systemd: Enabling ${SYSTEM_NAME} unit"
$SYSTEMCTL enable "${FILE_K3S_SERVICE}" >/dev/null 2>&1 || fatal "systemctl enable ${SYSTEM_NAME} failed"
$SYSTEMCTL daemon-reload >/dev/null

[ "${INSTALL_K3S_SKIP_START}" = true ] && exit 0

POST_INSTALL_HASHES=$(hashes_now)
if [ "${PRE_INSTALL_HASHES}" = "${POST_INSTALL_HASHES}" ] && [ "${INSTALL_K3S_FORCE_RESTART}" != true ]; then
    info 'No change detected so skipping service start'
    exit 0
fi
info "systemd: Starting ${SYSTEM_NAME}"
$SYSTEMCTL restart "${SYSTEM_NAME}" || fatal "double: ${SYSTEM_NAME} failed to start (see above)"
