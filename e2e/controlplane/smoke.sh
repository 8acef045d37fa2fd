#!/usr/bin/env bash
# Smoke test of the local control plane built by ./build.sh: etcd + kube-apiserver +
# kube-controller-manager + kube-scheduler on 127.0.0.1, no containers, no node.
#
#   e2e/controlplane/smoke.sh            start everything, check it serves, keep it up for
#                                        SMOKE_HOLD seconds (default 30), check again, tear down
#   e2e/controlplane/smoke.sh --serve    start everything, print KUBECONFIG=... (the only line on
#                                        stdout; progress goes to stderr), and keep it up
#                                        until interrupted (Ctrl-C / SIGTERM), then tear down
#
# Everything lives in one temp dir (certs, etcd data, kubeconfig, logs) that is removed on
# exit, with every process this script started. Ports are picked free. On failure the tail of
# each component log is printed; set SMOKE_LOG_DIR=DIR to keep a copy of the logs.
# Environment: ADVERTISE_ADDRESS (default 127.0.0.1; the e2e cluster uses the pod bridge IP),
# SMOKE_HOLD (seconds), CONTROLPLANE_CACHE (see build.sh; binaries must be built already).
#
# Certificates (openssl, EC P-256): one CA that signs the apiserver serving cert and the admin
# client cert (CN=admin, O=system:masters), plus an RSA service-account key pair.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
serve=0
case ${1:-} in
--serve) serve=1 ;;
"") ;;
*)
	echo "usage: $0 [--serve]" >&2
	exit 2
	;;
esac
hold=${SMOKE_HOLD:-30}
advertise=${ADVERTISE_ADDRESS:-127.0.0.1}

log() { printf 'controlplane/smoke.sh: %s\n' "$*" >&2; }

env_lines=$("$here/build.sh" --print-env kubernetes etcd) || {
	log "binaries missing: run e2e/controlplane/build.sh first"
	exit 1
}
eval "$env_lines"
: "${KUBE_BIN:?}" "${ETCD_BIN:?}" "${KUBE_VERSION:?}"

work=$(mktemp -d "${TMPDIR:-/tmp}/controlplane-smoke.XXXXXX")
pids=()
names=()

cleanup() {
	local status=$? i pid
	trap - EXIT INT TERM
	if ((status != 0)); then
		for i in "${!names[@]}"; do
			log "--- last lines of ${names[$i]}.log ---"
			tail -n 25 "$work/logs/${names[$i]}.log" >&2 || true
		done
	fi
	if [[ -n ${SMOKE_LOG_DIR:-} && -d $work/logs ]]; then
		mkdir -p "$SMOKE_LOG_DIR"
		cp -r "$work/logs/." "$SMOKE_LOG_DIR/" || true
	fi
	# stop in reverse start order: scheduler, controller-manager, apiserver, etcd
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
		pid=${pids[$i]}
		kill -TERM "$pid" 2>/dev/null || continue
		for _ in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.2
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$work"
	if ((status == 0)); then log "PASS"; else log "FAIL"; fi
	exit "$status"
}
trap cleanup EXIT
if ((serve)); then
	trap 'exit 0' INT TERM
else
	trap 'exit 130' INT
	trap 'exit 143' TERM
fi

fail() {
	log "$*"
	exit 1
}

# free_port: a TCP port nobody listens on and that this script has not handed out yet.
taken=" "
free_port() {
	local p listening
	listening=$(ss -Htln | awk '{ n = split($4, a, ":"); print a[n] }' | tr '\n' ' ')
	for _ in $(seq 200); do
		p=$((20000 + RANDOM % 40000))
		if [[ " $listening " != *" $p "* && $taken != *" $p "* ]]; then
			taken+="$p "
			echo "$p"
			return
		fi
	done
	fail "no free port found"
}

# start NAME CMD...: run CMD in the background, logging to logs/NAME.log.
start() {
	local name=$1
	shift
	"$@" >"$work/logs/$name.log" 2>&1 &
	pids+=("$!")
	names+=("$name")
	log "started $name (pid $!)"
}

# alive: every started process is still running.
alive() {
	local i
	for i in "${!pids[@]}"; do
		kill -0 "${pids[$i]}" 2>/dev/null || fail "${names[$i]} exited"
	done
}

# wait_for WHAT SECONDS CMD...: retry CMD every second until it succeeds.
wait_for() {
	local what=$1 secs=$2 i
	shift 2
	for ((i = 0; i < secs; i++)); do
		if "$@" >/dev/null 2>&1; then
			log "$what ready after ${i}s"
			return
		fi
		alive
		sleep 1
	done
	fail "$what not ready after ${secs}s"
}

mkdir -p "$work"/{pki,etcd,logs,apiserver}
chmod 700 "$work/etcd"
pki=$work/pki

# --- certificates -------------------------------------------------------------------------
ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
ec "$pki/ca.key"
openssl req -x509 -new -key "$pki/ca.key" -subj "/CN=unrdf-consensus-e2e-ca" -days 3650 \
	-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
	-out "$pki/ca.crt"
# sign NAME SUBJECT EXTFILE-CONTENT: NAME.key + NAME.crt signed by the CA.
sign() {
	ec "$pki/$1.key"
	openssl req -new -key "$pki/$1.key" -subj "$2" -out "$pki/$1.csr"
	printf '%s\n' "$3" >"$pki/$1.ext"
	openssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
		-days 3650 -extfile "$pki/$1.ext" -out "$pki/$1.crt" 2>/dev/null
}
san="IP:127.0.0.1,IP:10.0.0.1,IP:$advertise,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default"
san+=",DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
sign apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$san"
sign admin "/O=system:masters/CN=admin" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$pki/sa.key" 2>/dev/null
openssl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub"

# --- etcd ---------------------------------------------------------------------------------
etcd_port=$(free_port)
etcd_peer_port=$(free_port)
start etcd "$ETCD_BIN/etcd" --name=e2e --data-dir="$work/etcd" \
	--listen-client-urls="http://127.0.0.1:$etcd_port" \
	--advertise-client-urls="http://127.0.0.1:$etcd_port" \
	--listen-peer-urls="http://127.0.0.1:$etcd_peer_port" \
	--initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer_port" \
	--initial-cluster="e2e=http://127.0.0.1:$etcd_peer_port" \
	--unsafe-no-fsync --quota-backend-bytes=2147483648
wait_for etcd 30 curl -fsS "http://127.0.0.1:$etcd_port/health"

# --- kube-apiserver -----------------------------------------------------------------------
api_port=$(free_port)
start kube-apiserver "$KUBE_BIN/kube-apiserver" \
	--etcd-servers="http://127.0.0.1:$etcd_port" \
	--cert-dir="$work/apiserver" \
	--tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
	--client-ca-file="$pki/ca.crt" \
	--secure-port="$api_port" --bind-address=127.0.0.1 --advertise-address="$advertise" \
	--service-cluster-ip-range=10.0.0.0/24 \
	--allow-privileged=true \
	--authorization-mode=RBAC \
	--service-account-issuer=https://kubernetes.default.svc.cluster.local \
	--service-account-key-file="$pki/sa.pub" \
	--service-account-signing-key-file="$pki/sa.key" \
	--endpoint-reconciler-type=none \
	--enable-priority-and-fairness=false

kubeconfig=$work/admin.kubeconfig
kc() { "$KUBE_BIN/kubectl" --kubeconfig="$kubeconfig" "$@"; }
kc config set-cluster e2e --server="https://127.0.0.1:$api_port" \
	--certificate-authority="$pki/ca.crt" --embed-certs=true >/dev/null
kc config set-credentials admin --client-certificate="$pki/admin.crt" \
	--client-key="$pki/admin.key" --embed-certs=true >/dev/null
kc config set-context e2e --cluster=e2e --user=admin >/dev/null
kc config use-context e2e >/dev/null
wait_for kube-apiserver 120 kc get --raw /readyz

# --- kube-controller-manager and kube-scheduler -------------------------------------------
# Both log "missing content for CA bundle ...requestheader-client-ca-file" repeatedly: harmless,
# the apiserver has no front proxy (--requestheader-*) configured. --flex-volume-plugin-dir keeps
# kube-controller-manager from creating /usr/libexec/kubernetes/kubelet-plugins/volume/exec.
kcm_port=$(free_port)
start kube-controller-manager "$KUBE_BIN/kube-controller-manager" \
	--kubeconfig="$kubeconfig" \
	--authentication-kubeconfig="$kubeconfig" --authorization-kubeconfig="$kubeconfig" \
	--leader-elect=false \
	--bind-address=127.0.0.1 --secure-port="$kcm_port" \
	--service-account-private-key-file="$pki/sa.key" \
	--root-ca-file="$pki/ca.crt" \
	--cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
	--service-cluster-ip-range=10.0.0.0/24 \
	--flex-volume-plugin-dir="$work/flexvolume"
sched_port=$(free_port)
start kube-scheduler "$KUBE_BIN/kube-scheduler" \
	--kubeconfig="$kubeconfig" \
	--authentication-kubeconfig="$kubeconfig" --authorization-kubeconfig="$kubeconfig" \
	--leader-elect=false \
	--bind-address=127.0.0.1 --secure-port="$sched_port"
wait_for kube-controller-manager 60 curl -fsSk "https://127.0.0.1:$kcm_port/healthz"
wait_for kube-scheduler 60 curl -fsSk "https://127.0.0.1:$sched_port/healthz"

# --- checks -------------------------------------------------------------------------------
kc version >&2
server_version=$(kc version -o json | sed -n 's/^ *"gitVersion": "\(.*\)",$/\1/p' | tail -n 1)
[[ $server_version == "$KUBE_VERSION" ]] ||
	fail "server gitVersion is '$server_version', expected $KUBE_VERSION"
kc get ns >&2
# the service-account controllers of kube-controller-manager create "default" in each namespace
wait_for "serviceaccount default/default" 60 kc -n default get serviceaccount default
# the StatefulSet controller creates the pod; the scheduler finds no node and says so
kc apply -f - >&2 <<'EOF'
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: smoke, namespace: default}
spec:
  serviceName: smoke
  replicas: 1
  selector: {matchLabels: {app: smoke}}
  template:
    metadata: {labels: {app: smoke}}
    spec:
      containers: [{name: c, image: smoke:latest}]
EOF
wait_for "pod smoke-0 (statefulset controller)" 60 kc -n default get pod smoke-0
unschedulable() {
	[[ $(kc -n default get pod smoke-0 \
		-o jsonpath='{.status.conditions[?(@.type=="PodScheduled")].reason}') == Unschedulable ]]
}
wait_for "PodScheduled=False/Unschedulable (scheduler)" 60 unschedulable

if ((serve)); then
	log "control plane is up; Ctrl-C to stop"
	printf 'KUBECONFIG=%q\n' "$kubeconfig"
	while true; do
		alive
		sleep 5
	done
fi

log "holding for ${hold}s"
for ((t = 0; t < hold; t += 5)); do
	alive
	sleep 5
done
alive
kc get --raw /readyz >/dev/null || fail "apiserver not ready after ${hold}s"
curl -fsSk "https://127.0.0.1:$kcm_port/healthz" >/dev/null || fail "controller-manager unhealthy"
curl -fsSk "https://127.0.0.1:$sched_port/healthz" >/dev/null || fail "scheduler unhealthy"
kc get ns >/dev/null
