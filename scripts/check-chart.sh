#!/usr/bin/env bash
# Static checks of the Helm chart charts/raft-operator:
#   1. `helm lint --strict` with the default values, with monitoring enabled, and namespaced;
#   2. `helm template --include-crds … | kubeconform -strict` for the same three value sets,
#      against JSON schemas generated offline (no GitHub download);
#   3. a self-test: deliberately broken manifests must be rejected by the same kubeconform call,
#      so a schema set that silently accepts anything cannot pass.
#
# Tools, built only when missing and cached outside the repository, keyed by version:
#   helm         e2e/controlplane/build.sh helm (version from e2e/controlplane/helm/go.mod)
#   kubeconform  $TOOLS/kubeconform-$KUBECONFORM_VERSION/kubeconform (go install from the Go proxy)
#   yaml2json    $TOOLS/yaml2json-sigs.k8s.io-yaml-$YAML_VERSION/yaml2json (10-line Go helper, so
#                the schema generator needs only Python 3's standard library, not PyYAML)
#   schemas      $TOOLS/kubeconform-schemas/<key>/, key = Kubernetes version (from
#                e2e/controlplane/kubernetes/go.mod), prometheus-operator version, and a hash of
#                crds/raftcluster.yaml and of this script; generated from
#                - k8s.io/kubernetes@<version> api/openapi-spec/swagger.json (Go module cache),
#                - crds/raftcluster.yaml,
#                - github.com/prometheus-operator/prometheus-operator@<version>
#                  example/prometheus-operator-crd/*.yaml (ServiceMonitor, PodMonitor,
#                  PrometheusRule, …),
#                in kubeconform's file naming ({kind}{-group's first label}-{version}.json, lower
#                case) and made strict (additionalProperties: false on every object schema with
#                properties, as openapi2jsonschema --strict does).
#   TOOLS = ${UNRDF_TOOLS_CACHE:-$HOME/.cache/unrdf-consensus/tools}
#
# Needs: Go (>= 1.26, for kubeconform v0.8.0 and helm) with the Go module proxy, Python 3.
# Everything it runs is printed (`+ …`) on stderr; exits non-zero on the first failure.
#
# Measured 2026-11-26 on the shared 2-core machine (helm v3.22.0 already cached by
# e2e/controlplane/build.sh, which takes ~4 min to build it cold):
#   cold, empty tools cache and empty Go build cache, Go modules already downloaded: 131 s
#     (kubeconform ~110 s, yaml2json ~5 s, schemas 322 files ~8 s, checks ~4 s);
#     the very first `go install` of kubeconform, downloading its modules too: 173 s
#   schemas only (tools cached): 12 s;  warm (everything cached): 2.7-3.7 s
#   cache size: kubeconform 14 MB, yaml2json 4 MB, schemas 13 MB
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
chart=charts/raft-operator

KUBECONFORM_VERSION=v0.8.0
PROM_OPERATOR_VERSION=v0.85.0
YAML_VERSION=v1.6.0 # sigs.k8s.io/yaml, the one kubeconform v0.8.0 uses
tools=${UNRDF_TOOLS_CACHE:-$HOME/.cache/unrdf-consensus/tools}

log() { printf 'check-chart: %s\n' "$*" >&2; }
die() {
	log "FAIL: $*"
	exit 1
}
run() {
	printf '+ %s\n' "$*" >&2
	"$@"
}

# publish TMP DEST: move a finished directory into place, unless a concurrent run did first.
publish() {
	if [[ -e $2 ]] || ! mv -T "$1" "$2" 2>/dev/null; then
		rm -rf "$1"
	fi
}

command -v go >/dev/null || die "go is not installed (needed to build kubeconform)"
command -v python3 >/dev/null || die "python3 is not installed (needed to generate the schemas)"
mkdir -p "$tools"

# A scratch directory outside any Go module (go commands below must not see the workspace).
scratch=$(mktemp -d)
tmp= # a directory being filled in the cache, removed if the script stops before publishing it
cleanup() { rm -rf "$scratch" ${tmp:+"$tmp"}; }
trap cleanup EXIT

# ---------------------------------------------------------------------------------- helm
log "helm: e2e/controlplane/build.sh helm (builds only if missing)"
helm_env=$(e2e/controlplane/build.sh helm)
# HELM_BIN is the directory of the helm binary (printed with %q: eval it).
HELM_BIN=
eval "$(grep '^HELM_BIN=' <<<"$helm_env")"
helm=$HELM_BIN/helm
[[ -x $helm ]] || die "e2e/controlplane/build.sh did not give a helm binary ($helm)"
log "helm: $helm"

# --------------------------------------------------------------------------- kubeconform
kubeconform_dir=$tools/kubeconform-$KUBECONFORM_VERSION
KUBECONFORM=$kubeconform_dir/kubeconform
if [[ ! -x $KUBECONFORM ]]; then
	log "kubeconform $KUBECONFORM_VERSION: building into $kubeconform_dir"
	tmp=$kubeconform_dir.tmp.$$
	mkdir -p "$tmp"
	(cd "$scratch" && run env GOBIN="$tmp" nice -n 10 go install \
		"github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION")
	[[ -x $KUBECONFORM ]] || rm -rf "$kubeconform_dir" # a partial one
	publish "$tmp" "$kubeconform_dir"
fi
log "kubeconform: $KUBECONFORM"

# ----------------------------------------------------------------------------- yaml2json
yaml2json_dir=$tools/yaml2json-sigs.k8s.io-yaml-$YAML_VERSION
YAML2JSON=$yaml2json_dir/yaml2json
if [[ ! -x $YAML2JSON ]]; then
	log "yaml2json: building into $yaml2json_dir"
	mkdir -p "$scratch/yaml2json"
	cat >"$scratch/yaml2json/go.mod" <<EOF
module yaml2json

go 1.22

require sigs.k8s.io/yaml $YAML_VERSION
EOF
	cat >"$scratch/yaml2json/main.go" <<'EOF'
// yaml2json: the YAML documents of the files named on the command line, as one JSON array.
package main

import (
	"bytes"
	"fmt"
	"os"
	"regexp"

	"sigs.k8s.io/yaml"
)

var separator = regexp.MustCompile(`(?m)^---[ \t]*$`)

func main() {
	docs := [][]byte{}
	for _, name := range os.Args[1:] {
		data, err := os.ReadFile(name)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		for _, doc := range separator.Split(string(data), -1) {
			j, err := yaml.YAMLToJSON([]byte(doc))
			if err != nil {
				fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
				os.Exit(1)
			}
			if t := bytes.TrimSpace(j); len(t) > 0 && !bytes.Equal(t, []byte("null")) {
				docs = append(docs, t)
			}
		}
	}
	os.Stdout.WriteString("[" + string(bytes.Join(docs, []byte(","))) + "]\n")
}
EOF
	tmp=$yaml2json_dir.tmp.$$
	mkdir -p "$tmp"
	(cd "$scratch/yaml2json" && run env GOFLAGS=-mod=mod nice -n 10 go build -o "$tmp/yaml2json" .)
	[[ -x $YAML2JSON ]] || rm -rf "$yaml2json_dir" # a partial one
	publish "$tmp" "$yaml2json_dir"
fi

# ------------------------------------------------------------------------------- schemas
kube_version=$(awk '($1 == "require" && $2 == "k8s.io/kubernetes") { print $3; exit } ($1 == "k8s.io/kubernetes" && $2 ~ /^v/) { print $2; exit }' \
	e2e/controlplane/kubernetes/go.mod)
[[ -n $kube_version ]] || die "no k8s.io/kubernetes version in e2e/controlplane/kubernetes/go.mod"
key=$(cat crds/raftcluster.yaml "${BASH_SOURCE[0]}" | sha256sum | cut -c1-12)
schemas=$tools/kubeconform-schemas/k8s-$kube_version-promop-$PROM_OPERATOR_VERSION-$key

# mod_dir MODULE@VERSION: the module's directory in the Go module cache (downloaded if needed).
mod_dir() {
	(cd "$scratch" && run env GOFLAGS=-mod=mod go mod download -json "$1") |
		python3 -c 'import json, sys; d = json.load(sys.stdin); sys.exit(d["Error"]) if d.get("Error") else print(d["Dir"])'
}

if [[ ! -f $schemas/.complete ]]; then
	log "schemas: generating into $schemas"
	kube_dir=$(mod_dir "k8s.io/kubernetes@$kube_version")
	promop_dir=$(mod_dir "github.com/prometheus-operator/prometheus-operator@$PROM_OPERATOR_VERSION")
	run "$YAML2JSON" crds/raftcluster.yaml "$promop_dir"/example/prometheus-operator-crd/*.yaml >"$scratch/crds.json"
	tmp=$schemas.tmp.$$
	mkdir -p "$tmp"
	printf '+ python3 <generator> %s %s %s\n' "$tmp" "$kube_dir/api/openapi-spec/swagger.json" "$scratch/crds.json" >&2
	python3 - "$tmp" "$kube_dir/api/openapi-spec/swagger.json" "$scratch/crds.json" <<'PYTHON'
"""Kubernetes swagger.json and CRDs -> standalone, strict JSON schemas named like kubeconform's."""
import json
import os
import sys

out, swagger_path, crds_path = sys.argv[1:4]
REF = "#/definitions/"
COMBINERS = ("allOf", "anyOf", "oneOf")


def file_name(kind, group, version):
    suffix = "-" + group.split(".")[0] if group else ""
    return f"{kind}{suffix}-{version}.json".lower()


def fix(node, strict_ok=True):
    """Rewrite one schema in place: strict objects, nullable, int-or-string. Walks only schema
    positions (properties' values, items, additionalProperties, combiners), never property maps."""
    if not isinstance(node, dict):
        return node
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
    if node.get("format") == "int-or-string" or node.get("x-kubernetes-int-or-string") is True:
        for k in ("type", "format", "anyOf"):
            node.pop(k, None)
        node["oneOf"] = [{"type": "string"}, {"type": "integer"}]
    if node.get("nullable") is True and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
    if "properties" in node:
        for v in node["properties"].values():
            fix(v)
        if "additionalProperties" not in node and not preserve:
            node["additionalProperties"] = False
    if isinstance(node.get("items"), dict):
        fix(node["items"])
    elif isinstance(node.get("items"), list):
        for v in node["items"]:
            fix(v)
    if isinstance(node.get("additionalProperties"), dict):
        fix(node["additionalProperties"])
    for c in COMBINERS:
        for v in node.get(c, []):
            fix(v)
    if isinstance(node.get("not"), dict):
        fix(node["not"])
    return node


def refs(node, found):
    if isinstance(node, dict):
        r = node.get("$ref")
        if isinstance(r, str) and r.startswith(REF):
            found.add(r[len(REF):])
        for v in node.values():
            refs(v, found)
    elif isinstance(node, list):
        for v in node:
            refs(v, found)
    return found


def closure(definitions, roots):
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(refs(definitions[name], set()) - seen)
    return seen


with open(swagger_path, encoding="utf-8") as f:
    definitions = json.load(f)["definitions"]
# Quantity is a string in swagger, but YAML numbers (cpu: 1) are valid quantities.
definitions["io.k8s.apimachinery.pkg.api.resource.Quantity"] = {
    "oneOf": [{"type": "string"}, {"type": "number"}]
}
for d in definitions.values():
    fix(d)

written = 0
for name, d in definitions.items():
    for gvk in d.get("x-kubernetes-group-version-kind", []):
        # List and meta kinds are listed under many group versions; the object kinds once.
        path = os.path.join(out, file_name(gvk["kind"], gvk.get("group", ""), gvk["version"]))
        if os.path.exists(path):
            continue
        schema = dict(d)
        deps = closure(definitions, refs(d, set()))
        schema["definitions"] = {n: definitions[n] for n in sorted(deps)}
        with open(path, "w", encoding="utf-8") as f:
            json.dump(schema, f)
        written += 1

OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
with open(crds_path, encoding="utf-8") as f:
    crds = json.load(f)
for crd in crds:
    if crd.get("kind") != "CustomResourceDefinition":
        continue
    spec = crd["spec"]
    for version in spec["versions"]:
        schema = fix(version["schema"]["openAPIV3Schema"])
        props = schema.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props["metadata"] = {"$ref": REF + OBJECT_META}
        schema["additionalProperties"] = False
        schema["definitions"] = {
            n: definitions[n] for n in sorted(closure(definitions, [OBJECT_META]))
        }
        path = os.path.join(out, file_name(spec["names"]["kind"], spec["group"], version["name"]))
        with open(path, "w", encoding="utf-8") as f:
            json.dump(schema, f)
        written += 1
print(f"check-chart: schemas: {written} files", file=sys.stderr)
PYTHON
	touch "$tmp/.complete"
	[[ -f $schemas/.complete ]] || rm -rf "$schemas" # a partial one
	publish "$tmp" "$schemas"
fi
log "schemas: $schemas"

kubeconform() {
	run "$KUBECONFORM" -strict -summary -schema-location "$schemas/{{ .ResourceKind }}{{ .KindSuffix }}.json" "$@"
}

# ------------------------------------------------------------------------------- checks
value_sets=(
	"defaults:"
	"monitoring:--set monitoring.serviceMonitor.enabled=true --set monitoring.podMonitor.enabled=true --set monitoring.prometheusRule.enabled=true --set monitoring.grafanaDashboard.enabled=true"
	"namespaced:--set watchNamespaces={team-a,team-b} --set monitoring.podMonitor.enabled=true"
	"legacy-namespace:--set watchNamespace=team-a"
	"cluster-wide:--set clusterWide=true --set monitoring.podMonitor.enabled=true"
	"single:--set replicas=1 --set leaderElection.enabled=false"
)

for set in "${value_sets[@]}"; do
	name=${set%%:*}
	read -r -a args <<<"${set#*:}"
	log "lint ($name)"
	run "$helm" lint --strict "$chart" "${args[@]}"
	log "template | kubeconform ($name)"
	run "$helm" template raft-operator "$chart" --namespace raft-operator --include-crds "${args[@]}" \
		>"$scratch/$name.yaml"
	# No -ignore-missing-schemas: an object without a schema is an error.
	kubeconform "$scratch/$name.yaml"
done

# The RBAC is namespaced unless clusterWide: a Role per watched namespace, else a ClusterRole.
roles() { # file: "kind namespace" of every Role/ClusterRole
	awk '/^---/ { if (k != "") print k, (n == "" ? "-" : n); k = ""; n = "" }
		/^kind: (Role|ClusterRole)$/ { k = $2 }
		/^  namespace: / { if (n == "") n = $2 }
		END { if (k != "") print k, (n == "" ? "-" : n) }' "$1"
}
expect_roles() { # name, expected lines
	local got
	got=$(roles "$scratch/$1.yaml" | sort | tr '\n' ' ')
	[[ $got == "$2" ]] || {
		echo "check-chart: $1: RBAC is [$got], expected [$2]" >&2
		exit 1
	}
}
# Besides, with leader election, a Role for the Lease in the release namespace.
expect_roles defaults "Role raft-operator Role raft-operator "
expect_roles namespaced "Role raft-operator Role team-a Role team-b "
expect_roles legacy-namespace "Role raft-operator Role team-a "
expect_roles cluster-wide "ClusterRole - Role raft-operator "
expect_roles single "Role raft-operator "
grep -q 'value: "team-a,team-b"' "$scratch/namespaced.yaml" || {
	echo "check-chart: namespaced: RAFT_OPERATOR_NAMESPACE is not team-a,team-b" >&2
	exit 1
}

# High availability: two replicas by default, a rolling update, leader election on a Lease the
# operator may get, create and update in the release namespace (whatever it watches), a
# PodDisruptionBudget; one replica without leader election is Recreate, with neither.
log "leader election: replicas, Lease RBAC, PodDisruptionBudget"
for name in defaults namespaced legacy-namespace cluster-wide single; do
	"$YAML2JSON" "$scratch/$name.yaml" >"$scratch/$name.json"
	python3 - "$name" "$scratch/$name.json" <<'PYTHON' || die "$name: leader election objects (above)"
import json
import sys

name, path = sys.argv[1:3]
docs = json.load(open(path, encoding="utf-8"))
ha = name != "single"


def one(kind):
    found = [d for d in docs if d.get("kind") == kind]
    assert len(found) == 1, f"{len(found)} {kind}s"
    return found[0]


deploy = one("Deployment")
spec = deploy["spec"]
assert spec["replicas"] == (2 if ha else 1), f"replicas {spec['replicas']}"
assert spec["strategy"]["type"] == ("RollingUpdate" if ha else "Recreate"), spec["strategy"]
env = {e["name"]: e for e in spec["template"]["spec"]["containers"][0]["env"]}
assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
roles = [d for d in docs if d.get("kind") == "Role" and d["metadata"]["name"].endswith("-leader-election")]
pdbs = [d for d in docs if d.get("kind") == "PodDisruptionBudget"]
if not ha:
    assert "RAFT_OPERATOR_LEADER_ELECTION" not in env, "leader election env without it"
    assert not roles and not pdbs, "Lease Role or PodDisruptionBudget without leader election"
    sys.exit(0)
assert env["RAFT_OPERATOR_LEADER_ELECTION"]["value"] == "true"
ns = env["RAFT_OPERATOR_LEADER_ELECTION_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"]
assert ns == "metadata.namespace", ns
lease = env["RAFT_OPERATOR_LEADER_ELECTION_LEASE_NAME"]["value"]
assert len(roles) == 1, f"{len(roles)} leader election Roles"
role = roles[0]
assert role["metadata"]["namespace"] == "raft-operator", role["metadata"]
verbs = set()
for rule in role["rules"]:
    assert rule["apiGroups"] == ["coordination.k8s.io"] and rule["resources"] == ["leases"], rule
    names = rule.get("resourceNames")
    assert names in (None, [lease]), rule
    verbs |= {(v, bool(names)) for v in rule["verbs"]}
# create cannot be limited by name; get and update only on the operator's Lease.
assert verbs == {("create", False), ("get", True), ("update", True)}, sorted(verbs)
bindings = [d for d in docs if d.get("kind") == "RoleBinding" and d["metadata"]["name"] == role["metadata"]["name"]]
assert len(bindings) == 1 and bindings[0]["roleRef"]["name"] == role["metadata"]["name"], bindings
assert bindings[0]["subjects"][0]["name"] == spec["template"]["spec"]["serviceAccountName"]
pdb = one("PodDisruptionBudget")
assert pdb["spec"]["maxUnavailable"] == 1, pdb["spec"]
assert pdb["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"], pdb["spec"]
PYTHON
done
# The Grafana dashboard: valid JSON in its ConfigMap, with the discovery label, every panel
# querying, and every series it queries one the sidecar or the operator exports (as documented).
log "grafana dashboard: JSON, label, series"
"$YAML2JSON" "$scratch/monitoring.yaml" >"$scratch/monitoring.json"
python3 - "$scratch/monitoring.json" docs/sidecar.md docs/operator.md <<'PYTHON' || die "grafana dashboard (above)"
import json
import re
import sys

docs = json.load(open(sys.argv[1], encoding="utf-8"))
maps = [d for d in docs if d.get("kind") == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]
assert len(maps) == 1, f"{len(maps)} dashboard ConfigMaps"
cm = maps[0]
assert cm["metadata"]["labels"].get("grafana_dashboard") == "1", cm["metadata"]["labels"]
dash = json.loads(cm["data"]["raft-clusters.json"])
documented = set()
for path in sys.argv[2:]:
    documented |= set(re.findall(r"`((?:consensus|raftcluster|raft_operator|process)_[a-z_]+)`", open(path, encoding="utf-8").read()))
panels = [p for p in dash["panels"] if p["type"] != "row"]
assert len(panels) >= 10, f"{len(panels)} panels"
for p in panels:
    assert p["targets"], f"panel {p['title']!r} queries nothing"
    for t in p["targets"]:
        for series in re.findall(r"\b((?:consensus|raftcluster|raft_operator|process)_[a-z_]+)\{", t["expr"]):
            base = re.sub(r"_(bucket|sum|count)$", "", series)
            assert base in documented, f"panel {p['title']!r}: {series} is not a documented metric"
print(f"check-chart: dashboard {dash['title']!r}: {len(panels)} panels, every series documented", file=sys.stderr)
PYTHON

# Two replicas without leader election would reconcile twice at once: refused.
if "$helm" template raft-operator "$chart" --set leaderElection.enabled=false >/dev/null 2>&1; then
	die "replicas 2 without leader election was accepted"
fi

# Self-test: each of these is invalid and must be rejected.
log "self-test: broken manifests must fail"
cat >"$scratch/broken-deployment.yaml" <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: broken
spec:
  replicas: 1
  selector:
    matchLabels: {app: broken}
  template:
    metadata:
      labels: {app: broken}
    spec:
      containers:
        - name: c
          image: x
          imagePullPolicy: IfNotPresent
          unknownField: true
EOF
cat >"$scratch/broken-prometheusrule.yaml" <<'EOF'
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: broken
spec:
  groups:
    - name: g
      rules:
        - alert: A
          expr: up == 0
          severity: critical
EOF
cat >"$scratch/broken-raftcluster.yaml" <<'EOF'
apiVersion: consensus.unrdf.io/v1alpha1
kind: RaftCluster
metadata:
  name: broken
spec:
  replicas: "three"
EOF
for f in "$scratch"/broken-*.yaml; do
	if kubeconform "$f"; then
		die "kubeconform accepted the invalid $(basename "$f"): the schemas do not validate"
	fi
	log "rejected as expected: $(basename "$f")"
done

log "OK"
