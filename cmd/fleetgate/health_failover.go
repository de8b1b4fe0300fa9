package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/fleetgate/fleetgate/access"
	"github.com/fleetgate/fleetgate/failover"
	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/health"
	"github.com/fleetgate/fleetgate/internal/httpclient"
	"github.com/fleetgate/fleetgate/query"
)

// validateHealthFailover checks the health:, failover: and signals: sections.
func (c *Config) validateHealthFailover() error {
	if err := c.Health.Validate(); err != nil {
		return err
	}
	known := func(name string) bool {
		if len(c.Clusters) == 0 {
			return true // dev mode: clusters appear as they send
		}
		for _, cl := range c.Clusters {
			if cl.Name == name {
				return true
			}
		}
		return false
	}
	if err := c.Failover.Validate(known); err != nil {
		return err
	}
	if err := c.Signals.Validate(); err != nil {
		return err
	}
	for i, g := range c.Failover.Groups {
		if g.DNS != nil && !c.Signals.Kubernetes.DNSEndpoints {
			return fmt.Errorf("failover.groups[%d] (%s).dns: needs signals.kubernetes.dns_endpoints: true", i, g.Name)
		}
	}
	return nil
}

// setupHealthFailover builds health scoring, failover and its signals,
// registers their HTTP routes and adds their actors to the run group.
// storeReady says whether the metrics store takes writes: while it does not,
// clusters are not judged (their writes are refused by fleetgate itself).
func setupHealthFailover(cfg *Config, fleetReg *fleet.Registry, local health.Querier, storeReady func() error, listen string,
	rt *routes, g *run.Group, reg prometheus.Registerer, logger *slog.Logger) error {
	q := local
	if cfg.Health.QueryURL != "" {
		rq, err := health.NewAPIQuerier(cfg.Health.QueryURL, nil)
		if err != nil {
			return err
		}
		q = rq
	}
	eval, err := health.NewEvaluator(cfg.Health, q, fleetReg, reg, logger.With("component", "health"))
	if err != nil {
		return err
	}
	eval.SetSelfCheck(storeReady)

	dir := filepath.Join(cfg.Storage.Path, "failover")
	evlog, err := failover.OpenEventLog(filepath.Join(dir, "events.jsonl"), 10000)
	if err != nil {
		return err
	}
	outbox, err := failover.OpenOutbox(filepath.Join(dir, "outbox"), time.Duration(cfg.Signals.Retry.MinBackoff),
		time.Duration(cfg.Signals.Retry.MaxBackoff), reg, logger.With("component", "outbox"))
	if err != nil {
		evlog.Close()
		return err
	}
	ext := cfg.Signals.ExternalURL
	if ext == "" {
		host := listen
		if strings.HasPrefix(host, ":") {
			h, _ := os.Hostname()
			host = h + host
		}
		ext = "http://" + host
	}
	resend := time.Duration(cfg.Signals.AlertmanagerResendInterval)
	if resend == 0 {
		resend = time.Minute
	}
	var sinks []failover.Sink
	for i, am := range cfg.Signals.Alertmanagers {
		s, err := failover.NewAlertmanagerSink(am, resend, ext)
		if err != nil {
			evlog.Close()
			return httpclient.At(fmt.Sprintf("signals.alertmanagers[%d]", i), err)
		}
		sinks = append(sinks, s)
	}
	for i, wc := range cfg.Signals.Webhooks {
		s, err := failover.NewWebhookSink(wc, ext)
		if err != nil {
			evlog.Close()
			return httpclient.At(fmt.Sprintf("signals.webhooks[%d]", i), err)
		}
		sinks = append(sinks, s)
	}
	var leader failover.Leader = failover.Standalone{}
	if k := cfg.Signals.Kubernetes; k.Enabled() {
		klog.SetSlogLogger(logger.With("component", "client-go")) // client-go logs through klog
		rc, err := clientcmd.BuildConfigFromFlags("", k.Kubeconfig)
		if err != nil {
			evlog.Close()
			return fmt.Errorf("signals.kubernetes: %w", err)
		}
		if k.DNSEndpoints {
			dc, err := dynamic.NewForConfig(rc)
			if err != nil {
				evlog.Close()
				return fmt.Errorf("signals.kubernetes: %w", err)
			}
			sinks = append(sinks, failover.NewDNSSink(dc, cfg.Failover))
		}
		if k.LeaderElection.Enabled {
			cs, err := kubernetes.NewForConfig(rc)
			if err != nil {
				evlog.Close()
				return fmt.Errorf("signals.kubernetes: %w", err)
			}
			host, _ := os.Hostname()
			ll := failover.NewLeaseLeader(k.LeaderElection, cs, fmt.Sprintf("%s-%d", host, os.Getpid()), logger.With("component", "leader"))
			leader = ll
			ctx, cancel := context.WithCancel(context.Background())
			g.Add(func() error { return ll.Run(ctx) }, func(error) { cancel() })
		}
	}
	ctrl, err := failover.NewController(failover.ControllerOptions{
		Engine: failover.NewEngine(cfg.Failover), Log: evlog, Outbox: outbox, Sinks: sinks, Leader: leader,
		Resend: resend, ExternalURL: ext, Registerer: reg, Logger: logger.With("component", "failover"),
	})
	if err != nil {
		evlog.Close()
		return err
	}
	eval.Subscribe(ctrl.OnResults)
	{
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error { return eval.Run(ctx) }, func(error) { cancel() })
	}
	{
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error {
			defer evlog.Close()
			return ctrl.Run(ctx)
		}, func(error) { cancel() })
	}
	registerHealthFailoverRoutes(rt, fleetReg, eval, ctrl, q)
	return nil
}

// registerHealthFailoverRoutes mounts health (read, scoped: a cluster
// outside the caller's scope is not known to it), failover state (read, but
// only for callers who see every cluster: groups and events span clusters),
// drills (a GET simulation is a read like failover state; POST is admin) and
// the operator actions (admin).
func registerHealthFailoverRoutes(rt *routes, fleetReg *fleet.Registry, eval *health.Evaluator, ctrl *failover.Controller, q health.Querier) {
	read, admin, check := rt.on(classRead), rt.on(classAdmin), rt.on(classHealthCheck)
	result := func(r *http.Request, name string) (health.Result, bool) {
		if scope, _ := access.ScopeFrom(r.Context()); !scope.Allows(name) || fleetReg.Get(name) == nil {
			return health.Result{}, false
		}
		res, ok := eval.Result(name)
		if !ok {
			res = health.Result{Cluster: name, State: health.Unknown, Reason: "not evaluated yet", Signals: []health.SignalResult{}}
		}
		return res, true
	}
	read.HandleFunc("GET /api/v1/clusters/{name}/health", func(w http.ResponseWriter, r *http.Request) {
		res, ok := result(r, r.PathValue("name"))
		if !ok {
			query.WriteError(w, http.StatusNotFound, "not_found", fmt.Sprintf("cluster %q is not known", r.PathValue("name")))
			return
		}
		query.WriteSuccess(w, res)
	})
	read.HandleFunc("GET /api/v1/health", func(w http.ResponseWriter, r *http.Request) {
		scope, _ := access.ScopeFrom(r.Context())
		out := []health.Result{}
		for _, res := range eval.Results() {
			if scope.Allows(res.Cluster) {
				out = append(out, res)
			}
		}
		query.WriteSuccess(w, out)
	})
	// For cloud DNS health checks (Route 53, Cloudflare, GCLB): 200 while the
	// cluster is healthy or degraded, 503 when it is down or unknown.
	check.HandleFunc("GET /health/clusters/{name}", func(w http.ResponseWriter, r *http.Request) {
		res, ok := result(r, r.PathValue("name"))
		if !ok {
			http.Error(w, fmt.Sprintf("cluster %q is not known", r.PathValue("name")), http.StatusNotFound)
			return
		}
		code := http.StatusOK
		if res.State == health.Down || res.State == health.Unknown {
			code = http.StatusServiceUnavailable
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]any{"cluster": res.Cluster, "state": res.State, "score": res.Score, "reason": res.Reason})
	})
	check.HandleFunc("HEAD /health/clusters/{name}", func(w http.ResponseWriter, r *http.Request) {
		res, ok := result(r, r.PathValue("name"))
		switch {
		case !ok:
			w.WriteHeader(http.StatusNotFound)
		case res.State == health.Down || res.State == health.Unknown:
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			w.WriteHeader(http.StatusOK)
		}
	})

	read.Handle("GET /api/v1/failover/events", access.RequireAllClusters(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var after uint64
		limit := 1000
		qs := r.URL.Query()
		if s := qs.Get("after"); s != "" {
			v, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				query.WriteError(w, http.StatusBadRequest, "bad_data", fmt.Sprintf("after: %q is not an event id", s))
				return
			}
			after = v
		}
		if s := qs.Get("limit"); s != "" {
			v, err := strconv.Atoi(s)
			if err != nil || v < 1 || v > 10000 {
				query.WriteError(w, http.StatusBadRequest, "bad_data", fmt.Sprintf("limit: %q is not a number in [1, 10000]", s))
				return
			}
			limit = v
		}
		query.WriteSuccess(w, ctrl.Events(after, qs.Get("group"), limit))
	})))
	read.Handle("GET /api/v1/failover/groups", access.RequireAllClusters(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		query.WriteSuccess(w, ctrl.Status())
	})))

	type opRequest struct {
		Reason   string   `json:"reason"`
		Clusters []string `json:"clusters"`
		Duration string   `json:"duration"`
	}
	decode := func(w http.ResponseWriter, r *http.Request) (opRequest, time.Time, bool) {
		var req opRequest
		if !access.DecodeAdminBody(w, r, &req) || !checkReason(w, "reason", req.Reason) || !checkClusters(w, fleetReg, "clusters", req.Clusters) {
			return req, time.Time{}, false
		}
		var until time.Time
		if req.Duration != "" {
			d, err := model.ParseDuration(req.Duration)
			if err != nil || d <= 0 {
				query.WriteError(w, http.StatusBadRequest, "bad_data", fmt.Sprintf("duration: %q is not a positive duration", req.Duration))
				return req, time.Time{}, false
			}
			until = time.Now().Add(time.Duration(d))
		}
		return req, until, true
	}
	// noBody refuses a body on an action that takes none (DELETE).
	noBody := func(w http.ResponseWriter, r *http.Request) bool {
		var none struct{}
		return access.DecodeAdminBody(w, r, &none)
	}
	respond := func(w http.ResponseWriter, ev failover.Event, err error) {
		switch {
		case errors.Is(err, failover.ErrNotFound):
			query.WriteError(w, http.StatusNotFound, "not_found", err.Error())
		case errors.Is(err, failover.ErrBadRequest):
			query.WriteError(w, http.StatusBadRequest, "bad_data", err.Error())
		case err != nil:
			query.WriteError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
		default:
			query.WriteSuccess(w, ev)
		}
	}
	admin.HandleFunc("POST /api/v1/failover/groups/{name}/freeze", func(w http.ResponseWriter, r *http.Request) {
		req, until, ok := decode(w, r)
		if !ok {
			return
		}
		ev, err := ctrl.Freeze(r.PathValue("name"), actor(r), req.Reason, until)
		respond(w, ev, err)
	})
	admin.HandleFunc("DELETE /api/v1/failover/groups/{name}/freeze", func(w http.ResponseWriter, r *http.Request) {
		if !noBody(w, r) {
			return
		}
		ev, err := ctrl.Unfreeze(r.PathValue("name"), actor(r))
		respond(w, ev, err)
	})
	admin.HandleFunc("POST /api/v1/failover/groups/{name}/override", func(w http.ResponseWriter, r *http.Request) {
		req, until, ok := decode(w, r)
		if !ok {
			return
		}
		ev, err := ctrl.Override(r.PathValue("name"), actor(r), req.Clusters, req.Reason, until)
		respond(w, ev, err)
	})
	admin.HandleFunc("DELETE /api/v1/failover/groups/{name}/override", func(w http.ResponseWriter, r *http.Request) {
		if !noBody(w, r) {
			return
		}
		ev, err := ctrl.ClearOverride(r.PathValue("name"), actor(r))
		respond(w, ev, err)
	})
	drill := func(w http.ResponseWriter, r *http.Request, name string) {
		if name == "" {
			query.WriteError(w, http.StatusBadRequest, "bad_data", "cluster: missing (the cluster to take dark)")
			return
		}
		if fleetReg.Get(name) == nil {
			query.WriteError(w, http.StatusNotFound, "not_found", fmt.Sprintf("cluster %q is not known", name))
			return
		}
		rep, err := ctrl.Drill(r.Context(), eval, q, name)
		if errors.Is(err, failover.ErrNotFound) {
			query.WriteError(w, http.StatusNotFound, "not_found", err.Error())
			return
		}
		if err != nil {
			query.WriteError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
			return
		}
		query.WriteSuccess(w, rep)
	}
	// A GET drill only simulates (no signal is sent), but its report spans
	// every cluster of the groups.
	read.Handle("GET /api/v1/failover/drill", access.RequireAllClusters(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		drill(w, r, r.URL.Query().Get("cluster"))
	})))
	admin.HandleFunc("POST /api/v1/failover/drill", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Cluster string `json:"cluster"`
		}
		if !access.DecodeAdminBody(w, r, &req) {
			return
		}
		name := r.URL.Query().Get("cluster")
		if req.Cluster != "" {
			if name != "" && name != req.Cluster {
				query.WriteError(w, http.StatusBadRequest, "bad_data", fmt.Sprintf("cluster: %q in the URL and %q in the body", name, req.Cluster))
				return
			}
			name = req.Cluster
		}
		drill(w, r, name)
	})
}

// drillCommand implements `fleetgate drill --cluster X`: it asks a running
// fleetgate to simulate X going dark against its live policy.
func drillCommand(args []string) int {
	fs := flag.NewFlagSet("fleetgate drill", flag.ContinueOnError)
	cluster := fs.String("cluster", "", "cluster to take dark (required)")
	addr := fs.String("url", "http://127.0.0.1:9201", "base URL of the running fleetgate")
	asJSON := fs.Bool("json", false, "print the raw JSON report")
	tokenFile := fs.String("token-file", "", "file holding an admin bearer token (default: $FLEETGATE_TOKEN)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *cluster == "" || fs.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: fleetgate drill --cluster NAME [--url http://fleetgate:9201] [--token-file FILE] [--json]")
		return 2
	}
	token := strings.TrimSpace(os.Getenv("FLEETGATE_TOKEN"))
	if *tokenFile != "" {
		var err error
		if token, err = fleet.LoadBearerToken(*tokenFile, ""); err != nil {
			fmt.Fprintln(os.Stderr, "fleetgate drill: --token-file:", err)
			return 2
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	u := strings.TrimSuffix(*addr, "/") + "/api/v1/failover/drill?cluster=" + url.QueryEscape(*cluster)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleetgate drill:", err)
		return 2
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleetgate drill:", err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var env struct {
		Status string               `json:"status"`
		Data   failover.DrillReport `json:"data"`
		Error  string               `json:"error"`
	}
	if err := json.Unmarshal(body, &env); err != nil || env.Status != "success" {
		fmt.Fprintf(os.Stderr, "fleetgate drill: %s: %s %s\n", resp.Status, env.Error, strings.TrimSpace(string(body)))
		return 1
	}
	if *asJSON {
		os.Stdout.Write(body)
		return 0
	}
	printDrill(os.Stdout, env.Data)
	return 0
}

func printDrill(w io.Writer, r failover.DrillReport) {
	fmt.Fprintf(w, "DR drill: %s goes dark at %s (simulated, no signal sent)\n", r.Cluster, r.SimulatedAt.Format(time.RFC3339))
	fmt.Fprintf(w, "  stale after: %.1fs (cadence-aware)   detected down after: %.1fs\n", r.StaleAfterSeconds, r.DetectSeconds)
	secs := func(p *float64) string {
		if p == nil {
			return "never"
		}
		return fmt.Sprintf("%.1fs", *p)
	}
	for _, g := range r.Groups {
		fmt.Fprintf(w, "  group %s (%s): serving %v -> %v weights %v\n", g.Group, g.Mode, g.ServingBefore, g.ServingAfter, g.WeightsAfter)
		fmt.Fprintf(w, "    decision after %s, signal after %s, to %v\n", secs(g.DecideSeconds), secs(g.SignalSeconds), g.Signals)
		for _, ev := range g.Events {
			fmt.Fprintf(w, "    - %s %s: %s\n", ev.Kind, ev.Cluster, ev.Reason)
		}
	}
	if len(r.Capacity) > 0 {
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  CLUSTER\tRESOURCE\tREQUESTS\tALLOCATABLE\tABSORBED\tHEADROOM")
		num := func(p *float64) string {
			if p == nil {
				return "-"
			}
			return fmt.Sprintf("%.4g", *p)
		}
		for _, c := range r.Capacity {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%.4g\t%s\n", c.Cluster, c.Resource, num(c.Requests), num(c.Allocatable), c.Absorbed, num(c.Headroom))
		}
		tw.Flush()
	}
	for _, n := range r.Notes {
		fmt.Fprintln(w, "  note:", n)
	}
}
