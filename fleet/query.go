package fleet

import (
	"fmt"
	"net/url"
	"time"

	"github.com/prometheus/common/model"

	"github.com/fleetgate/fleetgate/internal/httpclient"
)

// Query source kinds.
const (
	QueryRemoteRead = "remote_read" // Prometheus remote-read protocol
	QueryPrometheus = "prometheus"  // Prometheus-compatible HTTP API (Prometheus, Thanos Query, Mimir, VictoriaMetrics)
)

// QueryEndpoint names where fleetgate reads a remote cluster's metrics at
// query time.
type QueryEndpoint struct {
	// Type is remote_read (default) or prometheus.
	Type string `yaml:"type"`
	// URL is the remote-read endpoint (e.g. http://prom:9090/api/v1/read)
	// or the base of the HTTP API (e.g. http://thanos-query:9090, https://mimir/prometheus).
	URL string `yaml:"url"`
	// Client is how fleetgate connects: authorization, basic_auth, oauth2,
	// tls_config, proxy_url, http_headers, ... (prometheus/common's
	// HTTPClientConfig) and the older headers, bearer_token_file,
	// bearer_token_env and tls keys.
	Client httpclient.Config `yaml:",inline"`
	// Timeout of one request to the source (default 30s).
	Timeout model.Duration `yaml:"timeout"`
	// Required makes a failure of this source fail the query instead of
	// turning into a partial-response warning.
	Required bool `yaml:"required"`
	// ReplicaLabels are dropped (and replicas merged) when a query asks for
	// dedup; the request's replicaLabels[] overrides them.
	ReplicaLabels []string `yaml:"replica_labels"`
	// ProbeInterval is how often the source's health is checked out of band
	// (default 10s); a source whose probe fails is skipped until it answers again.
	ProbeInterval model.Duration `yaml:"probe_interval"`
}

// UnmarshalYAML starts from prometheus/common's client defaults.
func (q *QueryEndpoint) UnmarshalYAML(unmarshal func(any) error) error {
	type plain QueryEndpoint
	*q = QueryEndpoint{Client: httpclient.DefaultConfig()}
	return q.Client.Decoded(unmarshal((*plain)(q)))
}

// Validate names the first bad field by its key relative to the endpoint
// (url, timeout, tls_config, ...).
func (q *QueryEndpoint) Validate() error {
	switch q.Type {
	case "", QueryRemoteRead, QueryPrometheus:
	default:
		return fmt.Errorf("type: %q is not one of remote_read, prometheus", q.Type)
	}
	if q.URL == "" {
		return fmt.Errorf("url: must be set")
	}
	u, err := url.Parse(q.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("url: %q is not an http(s) URL", q.URL)
	}
	if q.Timeout < 0 {
		return fmt.Errorf("timeout: must not be negative, got %s", q.Timeout)
	}
	if q.ProbeInterval < 0 {
		return fmt.Errorf("probe_interval: must not be negative, got %s", q.ProbeInterval)
	}
	for _, l := range q.ReplicaLabels {
		if !model.UTF8Validation.IsValidLabelName(l) || l == "" {
			return fmt.Errorf("replica_labels: %q is not a valid label name", l)
		}
	}
	return q.Client.Validate()
}

// TimeoutOrDefault is the per-request timeout.
func (q *QueryEndpoint) TimeoutOrDefault() time.Duration {
	if q.Timeout > 0 {
		return time.Duration(q.Timeout)
	}
	return 30 * time.Second
}

// ProbeIntervalOrDefault is the health probe interval.
func (q *QueryEndpoint) ProbeIntervalOrDefault() time.Duration {
	if q.ProbeInterval > 0 {
		return time.Duration(q.ProbeInterval)
	}
	return 10 * time.Second
}
