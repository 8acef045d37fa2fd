#!/usr/bin/env bash
# End-to-end check of the local cluster and the test node agent, without the operator:
#   cluster up → apply examples/static-statefulset.yaml (3 raft-sidecar pods, static bootstrap)
#   → all Ready → kubectl logs → one leader, every node agrees → an operation commits → delete a
#   pod: it comes back with the same node id (PVC data kept) and still has the operation →
#   kill -9 a container: restartCount 1, Ready again → scale 3→2: the removed ordinal's PVC, PV
#   and directory are gone → cluster down: no process, namespace, bridge, mount point or state.
# Exit status 0 only if every step passed. Progress on stderr, "PASS"/"FAIL: …" last.
# Environment: as e2e/local/cluster; SMOKE_KEEP=1 leaves the cluster up at the end.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cluster=$here/cluster
state=${E2E_LOCAL_STATE:-/tmp/unrdf-e2e-local}
netns_prefix=${E2E_NETNS_PREFIX:-e2epod-}
bridge=${E2E_BRIDGE:-e2ebr0}
target=${CARGO_TARGET_DIR:-$repo/target}
sidecar=${RAFT_SIDECAR_BIN:-$target/debug/raft-sidecar}
ns=raft-demo
t_start=$SECONDS

log() { printf 'smoke-agent: [%3ds] %s\n' "$((SECONDS - t_start))" "$*" >&2; }
fail() {
	log "FAIL: $*"
	echo "FAIL: $*"
	exit 1
}

eval "$("$repo/e2e/controlplane/build.sh" --print-env kubernetes)"
kc() { "$KUBE_BIN/kubectl" "$@"; }

token_file=$(mktemp)

# mount points the pods use that do not exist yet must not exist after `down` either
preexisting=()
for p in /var/lib/raft /etc/raft; do [[ -e $p ]] && preexisting+=("$p"); done

cleanup() {
	local status=$?
	trap - EXIT
	rm -f "$token_file"
	if ((status != 0)); then
		kc -n "$ns" get pods,pvc -o wide >&2 2>/dev/null || true
		kc -n "$ns" get events --sort-by=.lastTimestamp 2>/dev/null | tail -n 20 >&2 || true
		tail -n 30 "$state/logs/agent.log" >&2 2>/dev/null || true
	fi
	if [[ -e $state ]] && [[ ${SMOKE_KEEP:-0} != 1 || $status != 0 ]]; then "$cluster" down >&2 || true; fi
	exit "$status"
}
trap cleanup EXIT

# wait_until WHAT SECONDS CMD...: retry CMD every second until it succeeds.
wait_until() {
	local what=$1 secs=$2 i
	shift 2
	for ((i = 0; i < secs; i++)); do
		if "$@" >/dev/null 2>&1; then
			log "$what (${i}s)"
			return
		fi
		sleep 1
	done
	fail "$what: not within ${secs}s"
}


t0=$SECONDS
KUBECONFIG=$("$cluster" up | tail -n 1) || fail "cluster up failed"
export KUBECONFIG
log "cluster up in $((SECONDS - t0))s, KUBECONFIG=$KUBECONFIG"

kc apply -f "$here/examples/static-statefulset.yaml" >&2
kc -n "$ns" get secret raft-token -o jsonpath='{.data.token}' | base64 -d >"$token_file"

ready3() { [[ $(kc -n "$ns" get pods -l app=raft -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{" "}{end}') == "True True True " ]]; }
wait_until "3 pods Ready" 120 ready3

kc -n "$ns" logs raft-0 -c sidecar | grep -q "raft-sidecar running" ||
	fail "kubectl logs raft-0 does not show the sidecar's start line"
log "kubectl logs works (kubelet log API)"

pod_ip() { kc -n "$ns" get pod "$1" -o jsonpath='{.status.podIP}'; }
pod_netns() { echo "$netns_prefix$(kc -n "$ns" get pod "$1" -o jsonpath='{.metadata.uid}')"; }
status_of() { "$sidecar" ctl --admin "$(pod_ip "$1"):7090" --token-file "$token_file" --timeout 2s status; }
field() { sed -n "s/^ *\"$1\": \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}$/\1/p"; }

one_leader() {
	local leaders=0 ids="" p s
	for p in raft-0 raft-1 raft-2; do
		s=$(status_of "$p") || return 1
		[[ $(field role <<<"$s") == leader ]] && leaders=$((leaders + 1))
		ids+="$(field leaderId <<<"$s") "
	done
	[[ $leaders == 1 && $(tr ' ' '\n' <<<"$ids" | sort -u | grep -c .) == 1 ]]
}
wait_until "exactly one leader, agreed by all (queried at pod IPs from the host)" 60 one_leader

# an operation through the daemon API, which listens on 127.0.0.1 inside the pod's netns
ctl_in() {
	local pod=$1
	shift
	ip netns exec "$(pod_netns "$pod")" "$sidecar" ctl --token-file "$token_file" --timeout 5s "$@"
}
wait_until "operation op-1 committed" 30 ctl_in raft-0 submit --id op-1 --type smoke --payload '{"n":1}'

# DNS from inside a pod
ip netns exec "$(pod_netns raft-0)" getent hosts raft-2.raft.raft-demo.svc.cluster.local >/dev/null ||
	fail "raft-2.raft.raft-demo.svc.cluster.local does not resolve in raft-0"
log "pod DNS names resolve inside pods"

# delete a pod: recreated with its PVC data (same node id) and the journal
old_uid=$(kc -n "$ns" get pod raft-1 -o jsonpath='{.metadata.uid}')
old_id=$(status_of raft-1 | field nodeId)
t0=$SECONDS
kc -n "$ns" delete pod raft-1 --wait=true --timeout=60s >&2
log "pod raft-1 deleted in $((SECONDS - t0))s"
recreated() {
	local uid
	uid=$(kc -n "$ns" get pod raft-1 -o jsonpath='{.metadata.uid}') && [[ -n $uid && $uid != "$old_uid" ]] &&
		[[ $(kc -n "$ns" get pod raft-1 -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]
}
wait_until "raft-1 recreated and Ready" 90 recreated
new_id=$(status_of raft-1 | field nodeId)
[[ -n $old_id && $new_id == "$old_id" ]] || fail "raft-1 node id changed ($old_id → $new_id): PVC data lost"
log "raft-1 kept its node id $new_id (PVC data survived)"
has_op() { ctl_in raft-1 log | grep -q '"op-1"'; }
wait_until "raft-1 journal still has op-1" 30 has_op

# kill -9 a container: restarted in place, restartCount 1
pid=$(kc -n "$ns" get pod raft-0 -o jsonpath='{.status.containerStatuses[0].containerID}')
pid=${pid#process://}
[[ $pid =~ ^[0-9]+$ ]] || fail "no process id in raft-0's containerID"
kill -KILL "$pid"
restarted() {
	[[ $(kc -n "$ns" get pod raft-0 -o jsonpath='{.status.containerStatuses[0].restartCount}') == 1 ]] &&
		[[ $(kc -n "$ns" get pod raft-0 -o jsonpath='{.status.containerStatuses[0].lastState.terminated.exitCode}') == 137 ]] &&
		[[ -z $(kc -n "$ns" get pod raft-0 -o jsonpath='{.status.containerStatuses[0].state.waiting}') ]] &&
		[[ $(kc -n "$ns" get pod raft-0 -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]
}
wait_until "raft-0 restarted after kill -9 (restartCount 1, lastState exit 137) and Ready" 60 restarted

# scale down: whenScaled: Delete removes the PVC; the agent removes the PV and its directory
pv=$(kc -n "$ns" get pvc data-raft-2 -o jsonpath='{.spec.volumeName}')
[[ -n $pv && -d $state/agent/volumes/$pv ]] || fail "no directory for data-raft-2's PV '$pv'"
kc -n "$ns" scale statefulset raft --replicas=2 >&2
scaled() {
	! kc -n "$ns" get pod raft-2 && ! kc -n "$ns" get pvc data-raft-2 && ! kc get pv "$pv" &&
		[[ ! -e $state/agent/volumes/$pv ]]
}
wait_until "raft-2, its PVC, PV $pv and its directory gone" 90 scaled
[[ -d $state/agent/volumes/$(kc -n "$ns" get pvc data-raft-0 -o jsonpath='{.spec.volumeName}') ]] ||
	fail "data-raft-0's directory vanished"

if [[ ${SMOKE_KEEP:-0} == 1 ]]; then
	log "SMOKE_KEEP=1: leaving the cluster up"
	echo PASS
	exit 0
fi

# down: nothing left
agent_pids=$(cat "$state"/pids/*.pid | tr '\n' ' ')
pod_pids=$(for n in $(ip netns list | awk '{print $1}' | grep "^$netns_prefix"); do ip netns pids "$n"; done | tr '\n' ' ')
t0=$SECONDS
"$cluster" down >&2
log "cluster down in $((SECONDS - t0))s"
for p in $agent_pids $pod_pids; do
	kill -0 "$p" 2>/dev/null && fail "process $p still running after down"
done
ip netns list | grep -q "^$netns_prefix" && fail "pod network namespaces left"
ls -d /etc/netns/"$netns_prefix"* >/dev/null 2>&1 && fail "/etc/netns entries left"
ip link show dev "$bridge" >/dev/null 2>&1 && fail "bridge $bridge left"
[[ -e $state ]] && fail "state dir $state left"
grep -q "$netns_prefix" /proc/mounts && fail "netns mounts left"
for p in /var/lib/raft /etc/raft; do
	if [[ -e $p && " ${preexisting[*]} " != *" $p "* ]]; then fail "mount point $p left"; fi
done
log "nothing left after down"
echo PASS
