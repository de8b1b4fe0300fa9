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
	"strings"
	"text/tabwriter"
	"time"

	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/fleetgate/fleetgate/failover"
	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/health"
	"github.com/fleetgate/fleetgate/internal/httpclient"
)

// knownCluster says whether the clusters: section has name; with no
// clusters (dev mode) every name is known, as clusters appear as they send.
func (c *Config) knownCluster(name string) bool {
	if len(c.Clusters) == 0 {
		return true
	}
	for _, cl := range c.Clusters {
		if cl.Name == name {
			return true
		}
	}
	return false
}

// checkFailoverDNS checks the failover: section against the signals:
// section; the path is relative to failover:.
func (c *Config) checkFailoverDNS() error {
	for i, g := range c.Failover.Groups {
		if g.DNS != nil && !c.Signals.Kubernetes.DNSEndpoints {
			return fmt.Errorf("groups[%d] (%s).dns: needs signals.kubernetes.dns_endpoints: true", i, g.Name)
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
		return errors.Join(err, evlog.Close())
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
			return errors.Join(httpclient.At(fmt.Sprintf("signals.alertmanagers[%d]", i), err), evlog.Close())
		}
		sinks = append(sinks, s)
	}
	for i, wc := range cfg.Signals.Webhooks {
		s, err := failover.NewWebhookSink(wc, ext)
		if err != nil {
			return errors.Join(httpclient.At(fmt.Sprintf("signals.webhooks[%d]", i), err), evlog.Close())
		}
		sinks = append(sinks, s)
	}
	var leader failover.Leader = failover.Standalone{}
	if k := cfg.Signals.Kubernetes; k.Enabled() {
		klog.SetSlogLogger(logger.With("component", "client-go")) // client-go logs through klog
		rc, err := clientcmd.BuildConfigFromFlags("", k.Kubeconfig)
		if err != nil {
			return errors.Join(fmt.Errorf("signals.kubernetes: %w", err), evlog.Close())
		}
		if k.DNSEndpoints {
			dc, err := dynamic.NewForConfig(rc)
			if err != nil {
				return errors.Join(fmt.Errorf("signals.kubernetes: %w", err), evlog.Close())
			}
			sinks = append(sinks, failover.NewDNSSink(dc, cfg.Failover))
		}
		if k.LeaderElection.Enabled {
			cs, err := kubernetes.NewForConfig(rc)
			if err != nil {
				return errors.Join(fmt.Errorf("signals.kubernetes: %w", err), evlog.Close())
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
		return errors.Join(err, evlog.Close())
	}
	eval.Subscribe(ctrl.OnResults)
	{
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error { return eval.Run(ctx) }, func(error) { cancel() })
	}
	{
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error {
			defer func() {
				if err := evlog.Close(); err != nil {
					logger.Error("closing the failover event log", "err", err)
				}
			}()
			return ctrl.Run(ctx)
		}, func(error) { cancel() })
	}
	rt.mountHealth(health.NewAPI(eval, fleetReg))
	rt.mountFailover(failover.NewAPI(ctrl, fleetReg, eval, q))
	return nil
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
		if _, err := os.Stdout.Write(body); err != nil {
			fmt.Fprintln(os.Stderr, "fleetgate drill:", err)
			return 1
		}
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
