#!/usr/bin/env bash
# Tear down the one-node cluster started by scripts/slurm_local/up.sh:
#
#   scripts/slurm_local/down.sh          # NEKO_SLURM_DIR (default /tmp/neko-slurm)
#
# Cancels remaining jobs, stops slurmd, slurmctld and munged (by the pid files in the state
# directory, never by name) and removes the state directory. Safe to run twice, or after a
# failed up.sh.
set -uo pipefail

DIR=${NEKO_SLURM_DIR:-/tmp/neko-slurm}
export PATH="$PATH:/usr/sbin:/sbin"

if [ ! -d "$DIR" ]; then
    exit 0
fi
if [ -e "$DIR/slurm.conf" ] && command -v scancel >/dev/null 2>&1; then
    # Cancel what is left and wait (KillWait=5 s, then SIGKILL) until the job steps are gone:
    # slurmstepd outlives slurmd, so the daemons stop only once no job runs.
    export SLURM_CONF="$DIR/slurm.conf"
    timeout 10 scancel --full --quiet --user="$(id -un)" 2>/dev/null
    for _ in $(seq 30); do
        [ -z "$(timeout 5 squeue -h -t RUNNING,COMPLETING,PENDING 2>/dev/null)" ] && break
        sleep 1
    done
fi

stop() {  # stop NAME: SIGTERM the pid in run/NAME.pid, wait, then SIGKILL
    local pidfile="$DIR/run/$1.pid" pid
    [ -s "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.2
    done
    echo "down.sh: $1 (pid $pid) did not stop; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
}

stop slurmd
stop slurmctld
stop munged
rm -rf "$DIR"
echo "down.sh: stopped the local Slurm cluster and removed $DIR" >&2
