#!/usr/bin/env bash
# Single-node SLURM on loopback, for tests and CI (Debian's slurm-wlm; run as root).
#
# usage: .ci/batch/slurm.sh up|down|status
#   up      installs slurm-wlm when missing (apt), writes slurm.conf, starts slurmctld and slurmd
#           (auth/none, no accounting) and waits until the node is idle; prints
#           "export SLURM_CONF=..." on success, exits non-zero otherwise
#   down    cancels jobs still queued or running, then stops both daemons by the PIDs in their
#           pid files (never by name) and waits for them
#   status  sinfo and the job list; exits non-zero when the controller does not answer
#
# Environment:
#   HSBI_SLURM_DIR    state, spool, logs, pid files and slurm.conf; default ${TMPDIR:-/tmp}/hsbi-slurm
#   HSBI_SLURM_PORT   slurmctld port (slurmd uses the next one); default 6817
#   HSBI_SLURM_MEM    RealMemory of the node in MB; default 4000 (nothing enforces it: no cgroups)
#   HSBI_SLURM_CPUS   CPUs of the node; default nproc, at least 2 (a 2-task job step, e.g. Lightning
#                     DDP with srun --ntasks-per-node=2, must fit; more than the machine has is
#                     accepted: slurmd runs with config_overrides, tasks then share cores)
#
# Clients need SLURM_CONF=$HSBI_SLURM_DIR/slurm.conf. Without accounting, law must list finished
# jobs with `squeue --states=all` (law.cfg, [job] slurm_cmd_squeue). Jobs run as the submitting
# user; the store and the checkout are the same paths on the "node" (it is this machine).
# daemons and chroot live in sbin, which a minimal PATH (CI, cron, batch jobs) may lack
export PATH="${PATH}:/usr/local/sbin:/usr/sbin:/sbin"
set -u
D="${HSBI_SLURM_DIR:-${TMPDIR:-/tmp}/hsbi-slurm}"
PORT="${HSBI_SLURM_PORT:-6817}"
export SLURM_CONF="${D}/slurm.conf"

wait_gone() {  # pid: wait up to 10 s for it to exit
    for _ in $(seq 1 40); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.25; done
    kill -KILL "$1" 2>/dev/null || true
}

case "${1:-}" in
up)
    if ! command -v slurmctld >/dev/null; then
        echo "slurm.sh: installing slurm-wlm" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slurm-wlm >/dev/null \
            || { echo "slurm.sh: cannot install slurm-wlm (run apt-get update first?)" >&2; exit 2; }
    fi
    if [ -f "${D}/slurmctld.pid" ] && kill -0 "$(cat "${D}/slurmctld.pid")" 2>/dev/null; then
        echo "slurm.sh: already running (${D}); export SLURM_CONF=${SLURM_CONF}"; exit 0
    fi
    cpus="${HSBI_SLURM_CPUS:-$(nproc)}"
    [ "${cpus}" -ge 2 ] || cpus=2
    rm -rf "${D}/state" "${D}/spool"
    mkdir -p "${D}"/{state,spool,log}
    cat > "${SLURM_CONF}" <<CONF
# written by .ci/batch/slurm.sh: a one-node cluster on 127.0.0.1
ClusterName=hsbi
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/none
CredType=cred/none
SlurmctldPort=${PORT}
SlurmdPort=$((PORT + 1))
StateSaveLocation=${D}/state
SlurmdSpoolDir=${D}/spool
SlurmctldPidFile=${D}/slurmctld.pid
SlurmdPidFile=${D}/slurmd.pid
SlurmctldLogFile=${D}/log/slurmctld.log
SlurmdLogFile=${D}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=3600
NodeName=localhost NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${HSBI_SLURM_MEM:-4000} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
    slurmctld -c -f "${SLURM_CONF}" || { echo "slurm.sh: slurmctld failed; see ${D}/log" >&2; exit 1; }
    slurmd -f "${SLURM_CONF}" -N localhost || { echo "slurm.sh: slurmd failed; see ${D}/log" >&2; "$0" down; exit 1; }
    for _ in $(seq 1 120); do sinfo -h -o %T 2>/dev/null | grep -q idle && break; sleep 0.25; done
    if sinfo -h -o %T 2>/dev/null | grep -q idle; then
        echo "slurm up; export SLURM_CONF=${SLURM_CONF}"
    else
        echo "slurm.sh: node did not become idle; logs in ${D}/log" >&2
        tail -n 5 "${D}/log/slurmctld.log" "${D}/log/slurmd.log" >&2 2>/dev/null
        "$0" down >/dev/null; exit 1
    fi
    ;;
down)
    # cancel what still runs, so no job step outlives its daemons (this cluster is private)
    if [ -f "${D}/slurmctld.pid" ] && kill -0 "$(cat "${D}/slurmctld.pid")" 2>/dev/null; then
        jobs="$(squeue -h -t PENDING,RUNNING,CONFIGURING,COMPLETING -o %i 2>/dev/null | tr '\n' ' ')"
        if [ -n "${jobs// /}" ]; then
            # shellcheck disable=SC2086
            scancel ${jobs} 2>/dev/null || true
            for _ in $(seq 1 60); do
                [ -z "$(squeue -h -t RUNNING,CONFIGURING,COMPLETING -o %i 2>/dev/null)" ] && break
                sleep 0.25
            done
        fi
    fi
    for f in slurmd slurmctld; do
        pid="$(cat "${D}/${f}.pid" 2>/dev/null || true)"
        if [ -n "${pid}" ] && kill -0 "${pid}" 2>/dev/null; then
            kill -TERM "${pid}" 2>/dev/null || true
            wait_gone "${pid}"
        fi
        rm -f "${D}/${f}.pid"
    done
    echo "slurm down"
    ;;
status)
    sinfo && squeue --states=all
    ;;
*)
    echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
