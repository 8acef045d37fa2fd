// Command cert-manager-controller runs cert-manager's controller (the control loops of
// github.com/cert-manager/cert-manager, at the version go.mod requires) as a process against
// any API server, for the e2e tests of spec.tls.issuerRef (see ../build.sh).
//
// Upstream's own main package (cmd/controller) is a separate Go module whose path,
// github.com/cert-manager/cert-manager/controller-binary, does not match its directory and
// which has no tags: it cannot be fetched through the module proxy, and it may import
// cert-manager's internal/ packages, which this module may not. This file is therefore a
// small main of our own over cert-manager's public packages: the same controllers (upstream's
// default set; the registry is pkg/controller.Known()), built from the same
// controller.ContextFactory with upstream's default options, under the same flag names for
// the options it has. Differences from upstream's binary: no config file, no healthz or pprof
// server, the metrics server is off unless --metrics-listen-address is given, the leader
// election lock is always a Lease, only the flags below exist, and there are no Venafi issuers
// (their client, github.com/Venafi/vcert/v5, is refused by the module proxy: 403): an Issuer
// with spec.venafi is never Ready (the issuers controller logs "issuer 'venafi' not registered").
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	logsapi "k8s.io/component-base/logs/api/v1"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager"
	"github.com/cert-manager/cert-manager/pkg/controller"
	"github.com/cert-manager/cert-manager/pkg/controller/acmechallenges"
	"github.com/cert-manager/cert-manager/pkg/controller/acmeorders"
	shimingress "github.com/cert-manager/cert-manager/pkg/controller/certificate-shim/ingresses"
	cracme "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/acme"
	crapprover "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	crca "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	crselfsigned "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/selfsigned"
	crvault "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/vault"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	certmetrics "github.com/cert-manager/cert-manager/pkg/controller/certificates/metrics"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/revisionmanager"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	"github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	"github.com/cert-manager/cert-manager/pkg/controller/issuers"
	dnsutil "github.com/cert-manager/cert-manager/pkg/issuer/acme/dns/util"
	logf "github.com/cert-manager/cert-manager/pkg/logs"
	"github.com/cert-manager/cert-manager/pkg/util"
	utilfeature "github.com/cert-manager/cert-manager/pkg/util/feature"

	// The issuer types (each registers itself with pkg/issuer), as upstream's binary.
	_ "github.com/cert-manager/cert-manager/pkg/issuer/acme"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/vault"
)

// Upstream's default controllers (internal/apis/config/controller/v1alpha1
// DefaultEnabledControllers); "*" in --controllers stands for these.
var defaultControllers = []string{
	issuers.ControllerName,
	clusterissuers.ControllerName,
	certmetrics.ControllerName,
	shimingress.ControllerName,
	acmeorders.ControllerName,
	acmechallenges.ControllerName,
	cracme.CRControllerName,
	crapprover.ControllerName,
	crca.CRControllerName,
	crselfsigned.CRControllerName,
	crvault.CRControllerName,
	trigger.ControllerName,
	issuing.ControllerName,
	keymanager.ControllerName,
	requestmanager.ControllerName,
	readiness.ControllerName,
	revisionmanager.ControllerName,
}

type flags struct {
	master, kubeconfig, namespace, clusterResourceNamespace string
	qps                                                     float32
	burst, workers, maxChallenges                           int
	leaderElect                                             bool
	leNamespace                                             string
	leLease, leRenew, leRetry                               time.Duration
	controllers, copiedAnnotationPrefixes                   []string
	ownerRef, issuerAmbient, clusterIssuerAmbient           bool
	featureGates                                            map[string]bool
	metricsAddr                                             string
	minBackoff, maxBackoff                                  time.Duration
	version                                                 bool
	logging                                                 *logsapi.LoggingConfiguration
}

func parseFlags() *flags {
	f := &flags{logging: logsapi.NewLoggingConfiguration()}
	fs := pflag.NewFlagSet("cert-manager-controller", pflag.ContinueOnError)
	fs.StringVar(&f.master, "master", "", "API server URL (overrides the kubeconfig's)")
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster config)")
	fs.StringVar(&f.namespace, "namespace", "", "watch only this namespace (default: all)")
	fs.StringVar(&f.clusterResourceNamespace, "cluster-resource-namespace", "kube-system",
		"namespace of the Secrets that ClusterIssuers refer to")
	fs.Float32Var(&f.qps, "kube-api-qps", 20, "client-side QPS limit (used only without API Priority and Fairness)")
	fs.IntVar(&f.burst, "kube-api-burst", 50, "client-side burst limit")
	fs.IntVar(&f.workers, "concurrent-workers", 5, "workers per controller")
	fs.IntVar(&f.maxChallenges, "max-concurrent-challenges", 60, "ACME challenges processed at once")
	fs.BoolVar(&f.leaderElect, "leader-elect", true, "take a Lease before running the controllers")
	fs.StringVar(&f.leNamespace, "leader-election-namespace", "kube-system", "namespace of the Lease cert-manager-controller")
	fs.DurationVar(&f.leLease, "leader-election-lease-duration", 60*time.Second, "")
	fs.DurationVar(&f.leRenew, "leader-election-renew-deadline", 40*time.Second, "")
	fs.DurationVar(&f.leRetry, "leader-election-retry-period", 15*time.Second, "")
	fs.StringSliceVar(&f.controllers, "controllers", []string{"*"},
		`controllers to run: "*" = the defaults, "name" adds one, "-name" removes one`)
	fs.StringSliceVar(&f.copiedAnnotationPrefixes, "copied-annotation-prefixes",
		[]string{"*", "-kubectl.kubernetes.io/", "-fluxcd.io/", "-argocd.argoproj.io/"},
		"annotations copied from a Certificate to its CertificateRequests")
	fs.BoolVar(&f.ownerRef, "enable-certificate-owner-ref", false,
		"make each Certificate the owner of its Secret (the Secret is then deleted with it)")
	fs.BoolVar(&f.issuerAmbient, "issuer-ambient-credentials", false, "")
	fs.BoolVar(&f.clusterIssuerAmbient, "cluster-issuer-ambient-credentials", true, "")
	fs.Var(newFeatureGateFlag(&f.featureGates), "feature-gates", "A=true,B=false (cert-manager's feature gates)")
	fs.StringVar(&f.metricsAddr, "metrics-listen-address", "", "serve /metrics on this address (default: off)")
	fs.DurationVar(&f.minBackoff, "certificate-request-minimum-backoff-duration", time.Hour,
		"wait after a failed issuance before retrying (doubled per failure)")
	fs.DurationVar(&f.maxBackoff, "certificate-request-maximum-backoff-duration", 32*time.Hour, "")
	fs.BoolVar(&f.version, "version", false, "print the version and exit")
	logf.AddFlags(f.logging, fs)
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "unexpected arguments: %v\n", fs.Args())
		os.Exit(2)
	}
	return f
}

type featureGateFlag struct{ m *map[string]bool }

func newFeatureGateFlag(m *map[string]bool) *featureGateFlag {
	*m = map[string]bool{}
	return &featureGateFlag{m}
}
func (g *featureGateFlag) Type() string { return "mapStringBool" }
func (g *featureGateFlag) String() string {
	var s []string
	for k, v := range *g.m {
		s = append(s, fmt.Sprintf("%s=%t", k, v))
	}
	slices.Sort(s)
	return strings.Join(s, ",")
}
func (g *featureGateFlag) Set(v string) error {
	for kv := range strings.SplitSeq(v, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		k, val, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("feature gate %q: want NAME=true|false", kv)
		}
		switch strings.TrimSpace(val) {
		case "true":
			(*g.m)[strings.TrimSpace(k)] = true
		case "false":
			(*g.m)[strings.TrimSpace(k)] = false
		default:
			return fmt.Errorf("feature gate %q: want NAME=true|false", kv)
		}
	}
	return nil
}

// enabledControllers resolves --controllers the way upstream does.
func enabledControllers(spec []string, namespaced bool) ([]string, error) {
	enabled := sets.New[string]()
	known := controller.Known()
	for _, c := range spec {
		switch {
		case c == "*":
			enabled.Insert(defaultControllers...)
		case strings.HasPrefix(c, "-"):
			enabled.Delete(c[1:])
		default:
			if _, ok := known[c]; !ok {
				return nil, fmt.Errorf("unknown controller %q", c)
			}
			enabled.Insert(c)
		}
	}
	if namespaced {
		// As upstream: ClusterIssuers are cluster scoped.
		enabled.Delete(clusterissuers.ControllerName)
	}
	return sets.List(enabled), nil
}

func main() {
	logf.InitLogs()
	defer logf.FlushLogs()
	f := parseFlags()
	if f.version {
		fmt.Printf("%+v\n", util.VersionInfo())
		return
	}
	if err := logf.ValidateAndApply(f.logging); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err := utilfeature.DefaultMutableFeatureGate.SetFromMap(f.featureGates); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx = logf.NewContext(ctx, logf.Log, "controller")
	log := logf.FromContext(ctx)
	if err := run(ctx, f); err != nil {
		log.Error(err, "controller failed")
		logf.FlushLogs()
		os.Exit(1)
	}
}

func run(ctx context.Context, f *flags) error {
	log := logf.FromContext(ctx)
	names, err := enabledControllers(f.controllers, f.namespace != "")
	if err != nil {
		return err
	}
	log.Info("starting cert-manager controller", "version", util.VersionInfo(), "controllers", names)
	quantity := func(s string) resource.Quantity { return resource.MustParse(s) }
	nameservers := dnsutil.RecursiveNameservers
	opts := controller.ContextOptions{
		APIServerHost:      f.master,
		Kubeconfig:         f.kubeconfig,
		KubernetesAPIQPS:   f.qps,
		KubernetesAPIBurst: f.burst,
		Namespace:          f.namespace,
		IssuerOptions: controller.IssuerOptions{
			ClusterResourceNamespace:        f.clusterResourceNamespace,
			ClusterIssuerAmbientCredentials: f.clusterIssuerAmbient,
			IssuerAmbientCredentials:        f.issuerAmbient,
		},
		ACMEOptions: controller.ACMEOptions{
			HTTP01SolverImage:                 "quay.io/jetstack/cert-manager-acmesolver:" + util.AppVersion,
			HTTP01SolverResourceRequestCPU:    quantity("10m"),
			HTTP01SolverResourceRequestMemory: quantity("64Mi"),
			HTTP01SolverResourceLimitsCPU:     quantity("100m"),
			HTTP01SolverResourceLimitsMemory:  quantity("64Mi"),
			ACMEHTTP01SolverRunAsNonRoot:      true,
			DNS01CheckAuthoritative:           true,
			DNS01Nameservers:                  nameservers,
			DNS01CheckRetryPeriod:             10 * time.Second,
		},
		IngressShimOptions: controller.IngressShimOptions{
			DefaultIssuerKind:                 "Issuer",
			DefaultIssuerGroup:                cmapi.GroupName,
			DefaultAutoCertificateAnnotations: []string{"kubernetes.io/tls-acme"},
			GatewayAPIExtraProtocols:          sets.New[string](),
		},
		CertificateOptions: controller.CertificateOptions{
			EnableOwnerRef:                           f.ownerRef,
			CopiedAnnotationPrefixes:                 f.copiedAnnotationPrefixes,
			CertificateRequestMinimumBackoffDuration: f.minBackoff,
			CertificateRequestMaximumBackoffDuration: f.maxBackoff,
		},
		SchedulerOptions: controller.SchedulerOptions{MaxConcurrentChallenges: f.maxChallenges},
	}
	factory, err := controller.NewContextFactory(ctx, opts)
	if err != nil {
		return fmt.Errorf("building the controller context: %w", err)
	}
	base, err := factory.Build()
	if err != nil {
		return fmt.Errorf("building the controller context: %w", err)
	}

	if f.metricsAddr != "" {
		ln, err := net.Listen("tcp", f.metricsAddr)
		if err != nil {
			return fmt.Errorf("metrics listener: %w", err)
		}
		srv := base.Metrics.NewServer(ln)
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error(err, "metrics server")
			}
		}()
		defer srv.Close()
		log.Info("serving metrics", "address", ln.Addr().String())
	}

	// runControllers runs the controllers until ctx is done or one of them fails (which stops
	// the others).
	runControllers := func(ctx context.Context) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		var wg sync.WaitGroup
		errs := make(chan error, len(names))
		for _, n := range names {
			iface, err := controller.Known()[n](factory)
			if err != nil {
				return fmt.Errorf("constructing controller %s: %w", n, err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				log.V(logf.InfoLevel).Info("starting controller", "controller", n)
				if err := iface.Run(f.workers, ctx); err != nil {
					errs <- fmt.Errorf("controller %s: %w", n, err)
					cancel()
				}
			}()
		}
		// Controllers register the informers they need when constructed; start them now.
		base.SharedInformerFactory.Start(ctx.Done())
		base.KubeSharedInformerFactory.Start(ctx.Done())
		base.HTTP01ResourceMetadataInformersFactory.Start(ctx.Done())
		if opts.EnableGatewayAPI {
			base.GWShared.Start(ctx.Done())
		}
		wg.Wait()
		close(errs)
		var all []error
		for e := range errs {
			all = append(all, e)
		}
		return errors.Join(all...)
	}

	if !f.leaderElect {
		return runControllers(ctx)
	}
	le, err := factory.Build("leader-election")
	if err != nil {
		return err
	}
	host, err := os.Hostname()
	if err != nil {
		return err
	}
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, f.leNamespace, "cert-manager-controller",
		le.Client.CoreV1(), le.Client.CoordinationV1(), resourcelock.ResourceLockConfig{
			Identity:      host + "-external-cert-manager-controller",
			EventRecorder: le.Recorder,
		})
	if err != nil {
		return err
	}
	// OnStartedLeading runs in a goroutine of its own: wait for it (and the controllers it runs)
	// to return before exiting. Losing the Lease while the process is not stopping is an error,
	// as upstream.
	var runErr error
	started, done := make(chan struct{}), make(chan struct{})
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	leaderelection.RunOrDie(lctx, leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   f.leLease,
		RenewDeadline:   f.leRenew,
		RetryPeriod:     f.leRetry,
		ReleaseOnCancel: true,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				close(started)
				defer close(done)
				runErr = runControllers(ctx)
				cancel()
			},
			OnStoppedLeading: func() { log.Info("leader election: stopped leading") },
		},
	})
	lost := ctx.Err() == nil
	cancel()
	select {
	case <-started:
		<-done
	default:
	}
	if runErr == nil && lost {
		runErr = errors.New("leader election lost")
	}
	return runErr
}
