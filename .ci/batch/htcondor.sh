#!/usr/bin/env bash
# Single-node HTCondor ("minicondor") on loopback, for tests and CI; run as root.
#
# HTCondor is not packaged for Debian bookworm; trixie ships it (package "condor"), so the daemons
# live in a trixie chroot made with debootstrap (~1 min and ~560 MB the first time; kept and reused
# afterwards). Daemons bind to 127.0.0.1 only and authenticate by file system (FS).
#
# usage: .ci/batch/htcondor.sh up|down|status
#   up      builds the chroot when missing, bind-mounts /proc, /dev, /dev/shm (luigi needs it) and
#           the paths jobs use at the SAME path inside, writes host-side client shims and starts
#           condor_master; prints "export PATH=<shims>:$PATH" once a slot is advertised
#   down    stops condor_master by its PID (never by name), waits, and unmounts the bind mounts
#   status  condor_status and condor_q; exits non-zero when the collector does not answer
#
# Environment:
#   HSBI_CONDOR_ROOT   chroot directory; default ${TMPDIR:-/tmp}/hsbi-condor-root
#   HSBI_CONDOR_BINDS  extra host paths bind-mounted at the same path inside (the shared store and
#                      the job directory); the checkout, the venv ($VIRTUAL_ENV, else the
#                      checkout's .venv) and the real prefix of the venv's Python are always bound
#   HSBI_CONDOR_UID    uid owning and running the jobs (HTCondor refuses root-owned jobs); default 1000
#   HSBI_CONDOR_CPUS   slots' CPUs; default: nproc
#   HSBI_CONDOR_MIRROR Debian mirror for debootstrap; default: the host's apt mirror
#
# Who runs the jobs: the client shims (condor_submit, condor_q, condor_history, condor_rm,
# condor_status, condor_version) chroot with --userspec=UID:UID, so jobs run as UID, not root.
# That user must be able to read the checkout and the venv and write the store and the job
# directory; see "Running on a cluster" in the README.
# daemons and chroot live in sbin, which a minimal PATH (CI, cron, batch jobs) may lack
export PATH="${PATH}:/usr/local/sbin:/usr/sbin:/sbin"
set -u
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BASE="$(cd "${HERE}/../.." && pwd)"
R="${HSBI_CONDOR_ROOT:-${TMPDIR:-/tmp}/hsbi-condor-root}"
U="${HSBI_CONDOR_UID:-1000}"
S="${R}.shims/bin"
MOUNTS="${R}.mounts"   # the bind mounts made by `up`, one per line, for `down`

VENV="${VIRTUAL_ENV:-${BASE}/.venv}"   # the environment the jobs activate (workflows/remote.py)

python_prefix() {  # the real installation behind the venv's python3 (a pyenv or system Python)
    local py; py="$(readlink -f "${VENV}/bin/python3" 2>/dev/null)" || return 0
    [ -n "${py}" ] && dirname "$(dirname "${py}")"
}

bind() {  # path: bind-mount it at the same path inside the chroot (once; not inside the checkout)
    local p="$1"
    [ -e "${p}" ] || return 0
    case "${p}/" in "${BASE}/"?*) return 0 ;; esac
    if [ -d "${p}" ]; then mkdir -p "${R}${p}"; else mkdir -p "$(dirname "${R}${p}")"; touch "${R}${p}"; fi
    mountpoint -q "${R}${p}" || { mount --bind "${p}" "${R}${p}" && echo "${p}" >> "${MOUNTS}"; }
}

build() {
    command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends debootstrap >/dev/null || { echo "htcondor.sh: cannot install debootstrap" >&2; return 2; }
    local mirror="${HSBI_CONDOR_MIRROR:-$(sed -n "s/^URIs: *\([^ ]*\).*/\1/p" /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n 1)}"
    mirror="${mirror:-http://deb.debian.org/debian}"
    rm -rf "${R}.partial"
    debootstrap --variant=minbase trixie "${R}.partial" "${mirror}" >"${R}.build.log" 2>&1 \
        || { echo "htcondor.sh: debootstrap failed; see ${R}.build.log" >&2; return 1; }
    cp /etc/resolv.conf "${R}.partial/etc/resolv.conf"
    chroot "${R}.partial" /bin/sh -c "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends condor" >>"${R}.build.log" 2>&1 \
        || { echo "htcondor.sh: installing condor in the chroot failed; see ${R}.build.log" >&2; return 1; }
    chroot "${R}.partial" useradd -m -u "${U}" hsbijob
    cat > "${R}.partial/etc/condor/config.d/99-hsbi.config" <<'CONF'
# written by .ci/batch/htcondor.sh: central manager, submit and execute node on 127.0.0.1
CONDOR_HOST = 127.0.0.1
NETWORK_INTERFACE = 127.0.0.1
BIND_ALL_INTERFACES = False
use ROLE : CentralManager
use ROLE : Submit
use ROLE : Execute
use SECURITY : HOST_BASED
ALLOW_READ = *
ALLOW_WRITE = *
ALLOW_ADMINISTRATOR = *
ALLOW_DAEMON = *
ALLOW_NEGOTIATOR = *
SEC_DEFAULT_AUTHENTICATION = PREFERRED
SEC_DEFAULT_AUTHENTICATION_METHODS = FS
SEC_CLIENT_AUTHENTICATION_METHODS = FS
START = TRUE
SUSPEND = FALSE
PREEMPT = FALSE
KILL = FALSE
SCHEDD_INTERVAL = 2
SCHEDD_MIN_INTERVAL = 1
NEGOTIATOR_INTERVAL = 2
NEGOTIATOR_MIN_INTERVAL = 1
NEGOTIATOR_CYCLE_DELAY = 1
UPDATE_INTERVAL = 2
STARTER_UPDATE_INTERVAL = 2
SHADOW_QUEUE_UPDATE_INTERVAL = 2
JOB_START_DELAY = 0
BASE_CGROUP =
USE_PID_NAMESPACES = False
MOUNT_UNDER_SCRATCH =
CONF
    mv "${R}.partial" "${R}"
}

case "${1:-}" in
up)
    if [ ! -x "${R}/usr/sbin/condor_master" ]; then
        echo "htcondor.sh: building the trixie chroot in ${R} (first time only; log ${R}.build.log)" >&2
        build || exit $?
    fi
    pid="$(cat "${R}/run/condor/master.pid" 2>/dev/null || true)"
    if [ -n "${pid}" ] && kill -0 "${pid}" 2>/dev/null; then
        echo "htcondor.sh: already running; export PATH=${S}:\$PATH"; exit 0
    fi
    echo "NUM_CPUS = ${HSBI_CONDOR_CPUS:-$(nproc)}" > "${R}/etc/condor/config.d/98-hsbi-cpus.config"
    cp /etc/hosts "${R}/etc/hosts"
    : > "${MOUNTS}"
    for p in /proc /dev /dev/shm; do
        mountpoint -q "${R}${p}" || { mount --bind "${p}" "${R}${p}" && echo "${p}" >> "${MOUNTS}"; }
    done
    for p in "${BASE}" "${VENV}" "$(python_prefix)" ${HSBI_CONDOR_BINDS:-}; do [ -n "${p}" ] && bind "${p}"; done
    # every directory on the way to a bound path must be traversable by the job user
    chmod 755 "${R}/root"
    chroot "${R}" /bin/sh -c 'mkdir -p /run/condor /run/lock/condor /var/spool/condor /var/lib/condor/execute && chown condor:condor /run/condor /run/lock/condor /var/spool/condor /var/lib/condor /var/lib/condor/execute /var/log/condor'
    mkdir -p "${S}"
    for c in condor_submit condor_q condor_history condor_rm condor_status condor_version; do
        cat > "${S}/${c}" <<SHIM
#!/usr/bin/env bash
# host-side client for the chroot HTCondor (written by .ci/batch/htcondor.sh); runs as uid ${U}
[ "${c}" = condor_submit ] && chmod -R a+rwX "\${PWD}"
exec chroot --userspec=${U}:${U} "${R}" /bin/sh -c 'cd "\$0" 2>/dev/null || cd /; exec ${c} "\$@"' "\${PWD}" "\$@"
SHIM
        chmod +x "${S}/${c}"
    done
    chroot "${R}" /usr/sbin/condor_master -pidfile /run/condor/master.pid \
        || { echo "htcondor.sh: condor_master failed" >&2; "$0" down >/dev/null; exit 1; }
    for _ in $(seq 1 240); do chroot "${R}" condor_status -af Name 2>/dev/null | grep -q . && break; sleep 0.25; done
    if chroot "${R}" condor_status -af Name 2>/dev/null | grep -q .; then
        echo "htcondor up; export PATH=${S}:\$PATH"
    else
        echo "htcondor.sh: no slot advertised; logs in ${R}/var/log/condor" >&2
        "$0" down >/dev/null; exit 1
    fi
    ;;
down)
    pid="$(cat "${R}/run/condor/master.pid" 2>/dev/null || true)"
    if [ -n "${pid}" ] && kill -0 "${pid}" 2>/dev/null; then
        kill -TERM "${pid}" 2>/dev/null || true
        for _ in $(seq 1 80); do kill -0 "${pid}" 2>/dev/null || break; sleep 0.25; done
        kill -0 "${pid}" 2>/dev/null && kill -KILL "${pid}" 2>/dev/null
    fi
    rm -f "${R}/run/condor/master.pid"
    if [ -f "${MOUNTS}" ]; then   # unmount in reverse order of mounting
        tac "${MOUNTS}" | while read -r p; do
            mountpoint -q "${R}${p}" && { umount "${R}${p}" 2>/dev/null || umount -l "${R}${p}"; }
        done
        rm -f "${MOUNTS}"
    fi
    echo "htcondor down"
    ;;
status)
    [ -x "${R}/usr/sbin/condor_master" ] || { echo "htcondor.sh: no chroot at ${R}" >&2; exit 1; }
    chroot "${R}" condor_status && chroot --userspec="${U}:${U}" "${R}" condor_q
    ;;
*)
    echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
