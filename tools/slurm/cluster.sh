#!/usr/bin/env bash
# A real one-node Slurm cluster for tests, without systemd.
#
#   tools/slurm/cluster.sh start DIR [CPUS]   # writes DIR/slurm.conf, starts munged, slurmctld, slurmd
#   tools/slurm/cluster.sh stop DIR           # stops them by their pid files
#
# Clients find the cluster through SLURM_CONF=DIR/slurm.conf (start prints it).
# Needs root (slurmd runs jobs as their user) and the packages of
# tools/slurm/ensure-slurm.sh. Facts this follows: ../shared/slurm-notes.md.
set -euo pipefail

cmd="${1:-}"
dir="${2:-}"
if [ -z "$cmd" ] || [ -z "$dir" ]; then
    echo "usage: $0 start|stop DIR [CPUS]" >&2
    exit 2
fi

stop_pidfile() {
    local f="$1"
    [ -f "$f" ] || return 0
    local pid
    pid="$(cat "$f" 2>/dev/null || true)"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
}

case "$cmd" in
stop)
    stop_pidfile "$dir/slurmd.pid"
    stop_pidfile "$dir/slurmctld.pid"
    # munged is shared by every cluster on this host; stop it only if we started it.
    if [ -f "$dir/started-munged" ]; then
        stop_pidfile /run/munge/munged.pid
        rm -f "$dir/started-munged"
    fi
    ;;
start)
    cpus="${3:-2}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "cluster.sh: needs root (slurmd starts jobs as their user)" >&2
        exit 3
    fi
    for b in munged slurmctld slurmd sbatch squeue scontrol; do
        command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || {
            echo "cluster.sh: \`$b\` not found; run tools/slurm/ensure-slurm.sh" >&2
            exit 3
        }
    done
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    # A cluster left by a killed run: stop it first.
    stop_pidfile "$dir/slurmd.pid"
    stop_pidfile "$dir/slurmctld.pid"
    rm -rf "$dir/state" "$dir/spool"
    mkdir -p "$dir/state" "$dir/spool"
    max_array="${MYTHOS_TEST_MAX_ARRAY_SIZE:-1001}"
    cat > "$dir/slurm.conf" <<CONF
ClusterName=mythos-test
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SlurmdParameters=config_overrides
MaxArraySize=$max_array
MinJobAge=30
SchedulerParameters=bf_interval=1,sched_min_interval=0
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
    export SLURM_CONF="$dir/slurm.conf"

    # munged: one per host, reused when it runs already.
    if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        install -d -o munge -g munge -m 0755 /run/munge
        runuser -u munge -- /usr/sbin/munged
        touch "$dir/started-munged"
        for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
        munge -n | unmunge >/dev/null || { echo "cluster.sh: munged did not start" >&2; exit 1; }
    fi

    /usr/sbin/slurmctld -c -f "$SLURM_CONF"
    for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.1; done
    scontrol ping | grep -q UP || { echo "cluster.sh: slurmctld is not up; see $dir/slurmctld.log" >&2; exit 1; }
    /usr/sbin/slurmd -N localhost -f "$SLURM_CONF"
    for _ in $(seq 200); do
        [ "$(sinfo -h -N -n localhost -o %T 2>/dev/null)" = idle ] && break
        sleep 0.1
    done
    state="$(sinfo -h -N -n localhost -o %T 2>/dev/null || true)"
    [ "$state" = idle ] || { echo "cluster.sh: node localhost is \`$state\`, not idle; see $dir/slurmd.log" >&2; exit 1; }
    echo "export SLURM_CONF=$SLURM_CONF"
    ;;
*)
    echo "usage: $0 start|stop DIR [CPUS]" >&2
    exit 2
    ;;
esac
