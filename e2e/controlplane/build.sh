#!/usr/bin/env bash
# Build the local Kubernetes control plane used by the e2e tier (docs/testing.md) from Go
# modules: kube-apiserver, kube-controller-manager, kube-scheduler and kubectl (kubernetes/),
# etcd (etcd/), helm (helm/), versitygw (versitygw/: the S3-compatible server that backups
# are stored in by the tests) and cert-manager (cert-manager/: its controller, run as a process
# by the tests of spec.tls.issuerRef). Each tool has its own wrapper module here; the versions
# are the ones its go.mod requires (bump Kubernetes with ./bump-kubernetes.sh vX.Y.Z).
#
# cert-manager's directory also holds crds.yaml, which is not a binary: cert-manager's
# CustomResourceDefinitions (certificates, certificaterequests, issuers, clusterissuers,
# orders and challenges; cert-manager.io/v1 and acme.cert-manager.io/v1) as one plain YAML
# stream for `kubectl apply -f` (or --server-side), taken from deploy/crds/ of the module at
# that version (controller-gen's output; for v1.21.2 the same specs as the Helm chart's
# templated crd-*.yaml, without the chart's labels). Its controller binary,
# cert-manager-controller, is main.go of the wrapper module over cert-manager's packages (the
# upstream main package is in a module that the Go module proxy cannot serve); run it with
#   cert-manager-controller --kubeconfig FILE --leader-elect=false
# (--help lists the flags; no webhook, no healthz; Venafi issuers are left out).
#
# Binaries go to a cache outside the repository, keyed by tool and version, and are built only
# when missing:
#   ${CONTROLPLANE_CACHE:-$HOME/.cache/unrdf-consensus/controlplane}/<tool>-<version>/<binary>
# A version bump therefore builds into a new directory; delete the cache to force a rebuild.
#
# Usage:
#   build.sh [kubernetes|etcd|helm|versitygw|cert-manager ...]
#                                         build what is missing (default: all five), then
#                                         print KUBE_BIN=, ETCD_BIN=, HELM_BIN=, S3_BIN=,
#                                         CERT_MANAGER_BIN= (and *_VERSION=) lines
#   build.sh --print-env [tool ...]       print the same lines without building; exit 1 (with a
#                                         message on stderr) if a binary (or crds.yaml) is missing
#   eval "$(e2e/controlplane/build.sh)"   typical use from another script
#
# Needs Go >= the go directive of the wrapper modules (1.26.0 for Kubernetes v1.36) and the Go
# module proxy. Go runs under `nice -n 10` (the machine is shared). Progress goes to stderr.
#
# Measured 2026-11-26 on the 2-core / 23 GB Debian machine (Go 1.26.8, GOMAXPROCS=2), while
# another engineer was compiling Rust (RocksDB) on the same 2 cores, so the build got ~1 core:
#   module download (bump-kubernetes.sh + go get of etcd and helm, empty module cache): ~77 s
#   cold build (empty Go build cache, modules already downloaded), wall time:
#     kubernetes v1.36.3 (4 binaries) ... 1061 s (17m41s)
#     etcd v3.6.16 ......................   98 s
#     helm v3.22.0 ......................  228 s (Helm uses client-go v0.37: little is shared)
#     total ............................. 1387 s (23m07s; 1216 s user + 229 s sys CPU)
#   peak memory: 1.97 GB max RSS of one process (a link), 2.9 GB summed over the Go processes
#     running at once (two links in parallel at the end of the kubernetes build)
#   warm re-run (all binaries cached): 0.17 s, no Go invoked; a deleted binary with a warm Go
#     build cache is relinked in 4 s (etcd) to 12 s (kube-scheduler)
#   disk: binaries 403 MB (kube-apiserver 105, kube-controller-manager 96, kube-scheduler 73,
#     kubectl 60, helm 62, etcd 27 MB), Go module cache 1.7 GB, Go build cache 3.7 GB
#   Kubernetes v1.36.3 was the first version tried and built as is (no fallback needed).
# cert-manager v1.21.2 (cert-manager-controller, 80 MB), measured 2026-12-06 on the same machine
# while idle, modules already downloaded (go mod tidy of the wrapper: ~10 s), Go build cache
# warm from the other tools: 152 s wall (183 s user + 45 s sys; 1088 of its 1517 packages
# compiled; the 429 cached were 232 of the standard library and 197 others: little is shared
# with the Kubernetes build, cert-manager requires k8s.io v0.36.2 and newer golang.org/x);
# peak memory 1.3 GB; relink of a deleted binary 5 s; crds.yaml (1 MB) takes < 1 s.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${CONTROLPLANE_CACHE:-$HOME/.cache/unrdf-consensus/controlplane}

log() { printf 'controlplane/build.sh: %s\n' "$*" >&2; }
die() {
	log "$*"
	exit 1
}

# mod_version DIR MODULE: the version of MODULE that DIR/go.mod requires (no Go needed).
mod_version() {
	local v
	v=$(awk -v m="$2" '($1 == "require" && $2 == m) { print $3; exit } ($1 == m && $2 ~ /^v/) { print $2; exit }' "$1/go.mod")
	[[ -n $v ]] || die "$1/go.mod does not require $2"
	printf '%s\n' "$v"
}

# tool -> env prefix, module, binaries (binary=package)
tool_prefix() {
	case $1 in
	kubernetes) echo KUBE ;;
	etcd) echo ETCD ;;
	helm) echo HELM ;;
	versitygw) echo S3 ;;
	cert-manager) echo CERT_MANAGER ;;
	*) die "unknown tool '$1' (expected kubernetes, etcd, helm, versitygw or cert-manager)" ;;
	esac
}

tool_version() {
	case $1 in
	kubernetes) mod_version "$here/kubernetes" k8s.io/kubernetes ;;
	etcd) mod_version "$here/etcd" go.etcd.io/etcd/server/v3 ;;
	helm) mod_version "$here/helm" helm.sh/helm/v3 ;;
	versitygw) mod_version "$here/versitygw" github.com/versity/versitygw ;;
	cert-manager) mod_version "$here/cert-manager" github.com/cert-manager/cert-manager ;;
	esac
}

tool_packages() {
	case $1 in
	kubernetes)
		local c
		for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
			echo "$c=k8s.io/kubernetes/cmd/$c"
		done
		;;
	etcd) echo "etcd=go.etcd.io/etcd/server/v3" ;;
	helm) echo "helm=helm.sh/helm/v3/cmd/helm" ;;
	versitygw) echo "versitygw=github.com/versity/versitygw/cmd/versitygw" ;;
	cert-manager) echo "cert-manager-controller=unrdf-consensus/e2e/controlplane/cert-manager" ;;
	esac
}

# tool_files TOOL: the files besides binaries that TOOL's directory holds (made by make_file).
tool_files() {
	case $1 in
	cert-manager) echo crds.yaml ;;
	esac
}

# make_file TOOL NAME OUT: write the file NAME of TOOL to OUT.
make_file() {
	local tool=$1 name=$2 out=$3 src f crd
	case $tool/$name in
	cert-manager/crds.yaml)
		# The module's source, in the module cache (downloaded if missing; `go list -m` would
		# print no Dir then).
		src=$(cd "$here/cert-manager" && go mod download -json github.com/cert-manager/cert-manager |
			sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
		[[ -n $src && -d $src/deploy/crds ]] || die "cert-manager: no deploy/crds in the module ($src)"
		for crd in cert-manager.io_certificates cert-manager.io_certificaterequests \
			cert-manager.io_issuers cert-manager.io_clusterissuers \
			acme.cert-manager.io_orders acme.cert-manager.io_challenges; do
			f=$src/deploy/crds/$crd.yaml
			[[ -f $f ]] || die "cert-manager: $f is missing"
			# Plain YAML only: a Helm template line would break `kubectl apply`.
			! grep -q '{{' "$f" || die "cert-manager: $f is templated"
			printf -- '---\n# %s\n' "$crd.yaml"
			grep -v '^---$' "$f"
		done >"$out"
		;;
	*) die "$tool: no rule to make $name" ;;
	esac
}

tool_ldflags() {
	local tool=$1 version=$2 flags="-s -w"
	case $tool in
	kubernetes)
		# Without these /version says v0.0.0-master, which kubectl, Helm and kube-rs misread.
		local rest=${version#v} major minor pkg build_date
		major=${rest%%.*}
		rest=${rest#*.}
		minor=${rest%%.*}
		build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
		for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
			flags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
			flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
		done
		;;
	helm)
		# As helm's Makefile: its version, and the Kubernetes version that `helm lint` and
		# `helm template` assume (client-go v0.X.Y -> 1.X).
		local client_go rest kmajor kminor
		client_go=$(mod_version "$here/helm" k8s.io/client-go)
		rest=${client_go#v}
		kmajor=$((${rest%%.*} + 1))
		rest=${rest#*.}
		kminor=${rest%%.*}
		flags+=" -X helm.sh/helm/v3/internal/version.version=$version"
		flags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
		flags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$kmajor"
		flags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$kminor"
		flags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$kmajor"
		flags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$kminor"
		;;
	cert-manager)
		# As cert-manager's Makefile (the commit is unknown here): otherwise it says "canary".
		flags+=" -X github.com/cert-manager/cert-manager/pkg/util.AppVersion=$version"
		flags+=" -X github.com/cert-manager/cert-manager/pkg/util.AppGitState=clean"
		;;
	esac
	printf '%s\n' "$flags"
}

tool_dir() { printf '%s/%s-%s\n' "$cache" "$1" "$(tool_version "$1")"; }

# build TOOL: build the binaries of TOOL that are missing from its cache directory. One build of
# a tool at a time: a second caller (`make test` starts one in the background early) waits for the
# first one's lock, then finds the binaries there.
build() {
	local tool=$1 version dir entry name missing=() pkgs=() files=() tmp start lock
	version=$(tool_version "$tool")
	dir=$(tool_dir "$tool")
	mkdir -p "$cache"
	exec {lock}>"$cache/.$tool.lock"
	if ! flock -n "$lock"; then
		log "$tool $version: another build of it is running; waiting for it"
		flock "$lock"
	fi
	while IFS= read -r entry; do
		name=${entry%%=*}
		if [[ ! -x $dir/$name ]]; then
			missing+=("$name")
			pkgs+=("${entry#*=}")
		fi
	done < <(tool_packages "$tool")
	while IFS= read -r name; do
		[[ -s $dir/$name ]] || files+=("$name")
	done < <(tool_files "$tool")
	if ((${#missing[@]} + ${#files[@]} == 0)); then
		log "$tool $version: cached in $dir"
		exec {lock}>&-
		return
	fi
	command -v go >/dev/null || die "go is not installed (needed to build $tool $version)"
	mkdir -p "$dir"
	tmp=$(mktemp -d "$dir/.build.XXXXXX")
	# shellcheck disable=SC2064 # expand $tmp now: it is local
	trap "rm -rf '$tmp'" EXIT
	for name in "${files[@]}"; do
		make_file "$tool" "$name" "$tmp/$name"
		mv -f "$tmp/$name" "$dir/$name"
		log "$tool $version: wrote $dir/$name"
	done
	if ((${#missing[@]} == 0)); then
		rm -rf "$tmp"
		trap - EXIT
		exec {lock}>&-
		return
	fi
	log "$tool $version: building ${missing[*]} (this takes minutes when the Go build cache is cold)"
	start=$SECONDS
	# One go build for all the missing binaries of a tool shares the compilation of the common
	# packages; -o DIR/ then names each binary after its package (cmd/<name>). A single package
	# gets an explicit name (go.etcd.io/etcd/server/v3 would otherwise be called "server").
	local out=$tmp/
	((${#pkgs[@]} > 1)) || out=$tmp/${missing[0]}
	(cd "$here/$tool" &&
		CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags "$(tool_ldflags "$tool" "$version")" \
			-o "$out" "${pkgs[@]}")
	for name in "${missing[@]}"; do
		[[ -x $tmp/$name ]] || die "$tool: go build did not produce $name"
		mv -f "$tmp/$name" "$dir/$name"
	done
	rm -rf "$tmp"
	trap - EXIT
	exec {lock}>&-
	log "$tool $version: built in $((SECONDS - start)) s -> $dir"
}

print_env() {
	local tool prefix dir entry status=0
	for tool in "$@"; do
		prefix=$(tool_prefix "$tool")
		dir=$(tool_dir "$tool")
		while IFS= read -r entry; do
			if [[ ! -x $dir/${entry%%=*} ]]; then
				log "missing $dir/${entry%%=*} (run e2e/controlplane/build.sh $tool)"
				status=1
			fi
		done < <(tool_packages "$tool")
		while IFS= read -r entry; do
			if [[ ! -s $dir/$entry ]]; then
				log "missing $dir/$entry (run e2e/controlplane/build.sh $tool)"
				status=1
			fi
		done < <(tool_files "$tool")
		printf '%s_BIN=%q\n' "$prefix" "$dir"
		printf '%s_VERSION=%q\n' "$prefix" "$(tool_version "$tool")"
	done
	return "$status"
}

main() {
	local print_only=0 tools=() tool start
	while (($#)); do
		case $1 in
		--print-env) print_only=1 ;;
		-h | --help)
			sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"
			return 0
			;;
		-*) die "unknown option '$1'" ;;
		*)
			tool_prefix "$1" >/dev/null
			tools+=("$1")
			;;
		esac
		shift
	done
	((${#tools[@]})) || tools=(kubernetes etcd helm versitygw cert-manager)
	if ((!print_only)); then
		start=$SECONDS
		for tool in "${tools[@]}"; do
			build "$tool"
		done
		log "done in $((SECONDS - start)) s"
	fi
	print_env "${tools[@]}"
}

main "$@"
