#!/usr/bin/env bash
# The e2e suite (cargo test -p raft-e2e --test e2e) on a kind cluster, against the operator
# installed by the Helm chart, with images built from this checkout:
#
#   1. docker build the sidecar, operator and example-daemon images (Dockerfile targets);
#   2. kind create cluster (e2e/kind/kind-config.yaml), unless it already exists;
#   3. kind load docker-image the images (the sidecar twice: under E2E_SIDECAR_IMAGE and
#      E2E_SIDECAR_IMAGE_NEXT, the image a rolling-update test switches to);
#   4. route the pod network from the host to the nodes (the tests call pods by IP);
#   5. helm upgrade --install charts/raft-operator (clusterWide: every test makes its own
#      namespace), wait for the operator;
#   6. cargo test -p raft-e2e --test e2e -- --test-threads=1 with E2E_OPERATOR=deployment;
#   7. on failure, print the operator's log and export all of kind's logs to $E2E_LOG_DIR;
#      delete the cluster unless KEEP_CLUSTER=1 (or it existed before).
#
# Needs docker (with BuildKit), kind, kubectl, helm, cargo, and on Linux `ip` with root or sudo
# (step 4). Not run on the development machine (no container engine there): see
# .github/workflows/e2e-kind.yml.
#
# Environment:
#   KIND_CLUSTER_NAME   cluster name (default raft-e2e)
#   IMAGE_TAG           tag of the built images (default e2e)
#   KEEP_CLUSTER=1      do not delete the cluster at the end
#   SKIP_BUILD=1        do not build the images (they must exist locally with IMAGE_TAG)
#   E2E_LOG_DIR         where kind's logs go on failure (default ./e2e-kind-logs)
#   E2E_KEEP=1          passed to the suite: keep the namespace of a failed test
#   HELM, KIND, KUBECTL, DOCKER   the tools (default: from PATH)
#   extra arguments     passed to the test binary after --test-threads=1 (e.g. a test name)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/../.."

cluster=${KIND_CLUSTER_NAME:-raft-e2e}
tag=${IMAGE_TAG:-e2e}
log_dir=${E2E_LOG_DIR:-$PWD/e2e-kind-logs}
helm=${HELM:-helm}
kind=${KIND:-kind}
kubectl=${KUBECTL:-kubectl}
docker=${DOCKER:-docker}
operator_ns=raft-operator

sidecar_image=raft-sidecar:$tag
sidecar_image_next=raft-sidecar:$tag-next
operator_image=raft-operator:$tag
daemon_image=raft-example-daemon:$tag

log() { printf 'e2e/kind: %s\n' "$*" >&2; }
die() {
	log "FAIL: $*"
	exit 1
}
run() {
	printf '+ %s\n' "$*" >&2
	"$@"
}

for tool in "$docker" "$kind" "$kubectl" "$helm" cargo; do
	command -v "$tool" >/dev/null || die "$tool not found"
done

# ------------------------------------------------------------------------------ images
if [[ ${SKIP_BUILD:-} != 1 ]]; then
	export DOCKER_BUILDKIT=1
	run "$docker" build --target sidecar -t "$sidecar_image" .
	run "$docker" build --target operator -t "$operator_image" .
	run "$docker" build --target example-daemon -t "$daemon_image" .
fi
run "$docker" tag "$sidecar_image" "$sidecar_image_next"

# ----------------------------------------------------------------------------- cluster
created=0
if "$kind" get clusters 2>/dev/null | grep -qx "$cluster"; then
	log "cluster $cluster exists: reusing it (and keeping it)"
else
	run "$kind" create cluster --name "$cluster" --config "$here/kind-config.yaml" --wait 120s
	created=1
fi
kubeconfig=$(mktemp)
run "$kind" get kubeconfig --name "$cluster" >"$kubeconfig"
export KUBECONFIG=$kubeconfig

status=1
cleanup() {
	if [[ $status -ne 0 ]]; then
		log "failed: operator log and kind logs (in $log_dir)"
		"$kubectl" -n "$operator_ns" logs -l app.kubernetes.io/name=raft-operator --tail=300 || true
		"$kubectl" get pods -A -o wide || true
		"$kind" export logs "$log_dir" --name "$cluster" || true
	fi
	if [[ $created == 1 && ${KEEP_CLUSTER:-} != 1 ]]; then
		"$kind" delete cluster --name "$cluster" || true
	else
		log "cluster $cluster kept; KUBECONFIG=$kubeconfig"
	fi
}
trap cleanup EXIT

run "$kind" load docker-image --name "$cluster" \
	"$sidecar_image" "$sidecar_image_next" "$operator_image" "$daemon_image"

# ----------------------------------------------------------- pod routes from the host
# The tests talk to pods by IP (sidecar admin API, example daemons). kind's nodes are containers
# on a docker bridge the host can reach; send each node's pod CIDR to that node.
if [[ $(uname -s) == Linux ]]; then
	sudo_cmd=()
	[[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
	while read -r node cidr; do
		[[ -n $cidr ]] || die "node $node has no podCIDR"
		ip=$("$docker" inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$node")
		run "${sudo_cmd[@]}" ip route replace "$cidr" via "$ip"
	done < <("$kubectl" get nodes -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.spec.podCIDR}{"\n"}{end}')
else
	log "not Linux: pods are not routable from the host; tests that call pods by IP will fail"
fi

# -------------------------------------------------------------------------- operator
run "$helm" upgrade --install raft-operator charts/raft-operator \
	--namespace "$operator_ns" --create-namespace \
	--set image.repository="${operator_image%:*}" --set image.tag="$tag" \
	--set image.pullPolicy=Never \
	--set sidecarImage.repository="${sidecar_image%:*}" --set sidecarImage.tag="$tag" \
	--set clusterWide=true \
	--wait --timeout 180s
run "$kubectl" -n "$operator_ns" wait --for=condition=Available deployment \
	-l app.kubernetes.io/name=raft-operator --timeout 120s

# ----------------------------------------------------------------------------- tests
export E2E_OPERATOR=deployment
export E2E_OPERATOR_NAMESPACE=$operator_ns
export E2E_SIDECAR_IMAGE=$sidecar_image
export E2E_SIDECAR_IMAGE_NEXT=$sidecar_image_next
export E2E_DAEMON_IMAGE=$daemon_image
run cargo build -p kubectl-raft # the plugin scenario runs it on this machine
run cargo test -p raft-e2e --test e2e -- --test-threads=1 "$@"
status=0
log "PASS"
