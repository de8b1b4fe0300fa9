package fleet

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Cluster is one cluster's identity. It is immutable once built.
type Cluster struct {
	Name   string
	Region string
	Zone   string
	Role   Role
	// Labels are the extra labels stamped on every signal besides `cluster`
	// (region and zone when set, plus the configured ones).
	Labels map[string]string
	// Verified is true when a credential proved the cluster; false in dev mode.
	Verified bool

	stats *clusterStats
	lim   *limitState
}

// StampLabels returns the labels fleetgate stamps on this cluster's data, sorted by name,
// `cluster` included.
func (c *Cluster) StampLabels() [][2]string {
	out := make([][2]string, 0, len(c.Labels)+1)
	out = append(out, [2]string{ClusterLabel, c.Name})
	for k, v := range c.Labels {
		out = append(out, [2]string{k, v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i][0] < out[j][0] })
	return out
}

// Credential is what a request presented.
type Credential struct {
	BearerToken string
	PeerCert    *x509.Certificate
	// Claimed is the cluster named by the X-Fleetgate-Cluster header; it is
	// only believed in dev mode.
	Claimed string
}

// CredentialFromHTTP extracts the credential of an HTTP request.
func CredentialFromHTTP(r *http.Request) Credential {
	var c Credential
	if h := r.Header.Get("Authorization"); h != "" {
		if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
			c.BearerToken = strings.TrimSpace(h[7:])
		}
	}
	// Only a certificate the listener verified against its CA proves
	// anything (a web config may request certificates without verifying).
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.PeerCertificates) > 0 {
		c.PeerCert = r.TLS.PeerCertificates[0]
	}
	c.Claimed = r.Header.Get(DevHeader)
	return c
}

type tokenEntry struct {
	sum     [32]byte
	cluster *Cluster
}

// Registry maps credentials to clusters and keeps what each cluster sent.
type Registry struct {
	onConflict ConflictPolicy
	devDefault string
	tokens     []tokenEntry
	tlsNames   map[string]*Cluster
	configured []*Cluster
	limits     Limits // of dev-mode clusters
	series     SeriesCounter
	now        func() time.Time
	mu         sync.RWMutex
	byName     map[string]*Cluster
}

// SeriesCounter reports a cluster's active series.
type SeriesCounter interface {
	ActiveSeries(cluster string) (n int64, ok bool)
}

// SetSeriesCounter makes the registry's statuses report active series.
// Call it before serving.
func (r *Registry) SetSeriesCounter(sc SeriesCounter) { r.series = sc }

// DefaultLimits are the limits of clusters that do not override them.
func (r *Registry) DefaultLimits() Limits { return r.limits.withBursts() }

// NewRegistry builds the registry from a validated config, reading the secrets.
func NewRegistry(cfg Config) (*Registry, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Registry{
		onConflict: cfg.OnConflict,
		devDefault: cfg.DevDefaultCluster,
		tlsNames:   map[string]*Cluster{},
		byName:     map[string]*Cluster{},
		limits:     cfg.defaults(),
		now:        time.Now,
	}
	if r.onConflict == "" {
		r.onConflict = ConflictReject
	}
	if r.devDefault == "" {
		r.devDefault = "default"
	}
	for i, cc := range cfg.Clusters {
		c := newCluster(cc.Name, cc.Region, cc.Zone, cc.Role, cc.Labels, true, cc.Limits.Apply(r.limits))
		tok, err := cc.Credentials.loadToken()
		if err != nil {
			return nil, fmt.Errorf("clusters[%d].credentials.%w (cluster %s)", i, err, cc.Name)
		}
		if tok != "" {
			sum := sha256.Sum256([]byte(tok))
			for _, t := range r.tokens {
				if t.sum == sum {
					return nil, fmt.Errorf("clusters[%d].credentials: same bearer token as cluster %q (cluster %s)", i, t.cluster.Name, cc.Name)
				}
			}
			r.tokens = append(r.tokens, tokenEntry{sum: sum, cluster: c})
		}
		for _, n := range cc.Credentials.TLSNames {
			r.tlsNames[n] = c
		}
		r.configured = append(r.configured, c)
		r.byName[c.Name] = c
	}
	return r, nil
}

func newCluster(name, region, zone string, role Role, extra map[string]string, verified bool, lim Limits) *Cluster {
	lbls := map[string]string{}
	if region != "" {
		lbls["region"] = region
	}
	if zone != "" {
		lbls["zone"] = zone
	}
	for k, v := range extra {
		lbls[k] = v
	}
	if role == "" {
		role = RolePrimary
	}
	return &Cluster{Name: name, Region: region, Zone: zone, Role: role, Labels: lbls, Verified: verified,
		stats: newClusterStats(), lim: newLimitState(lim)}
}

// DevMode is true when no clusters are configured.
func (r *Registry) DevMode() bool { return len(r.configured) == 0 }

// OnConflict is the policy for series that claim another cluster.
func (r *Registry) OnConflict() ConflictPolicy { return r.onConflict }

// Identify maps a credential to its cluster. With clusters configured, an
// unknown or missing credential is ErrUnauthenticated. In dev mode the
// claimed cluster (or nil, meaning "take it from the data") is returned.
func (r *Registry) Identify(c Credential) (*Cluster, error) {
	if r.DevMode() {
		if c.Claimed != "" {
			if !clusterNameRE.MatchString(c.Claimed) {
				return nil, fmt.Errorf("%w: %s header %q is not a valid cluster name", ErrUnauthenticated, DevHeader, c.Claimed)
			}
			return r.Dev(c.Claimed), nil
		}
		return nil, nil
	}
	if c.BearerToken != "" {
		sum := sha256.Sum256([]byte(c.BearerToken))
		var found *Cluster
		for _, t := range r.tokens {
			if subtle.ConstantTimeCompare(t.sum[:], sum[:]) == 1 {
				found = t.cluster
			}
		}
		if found != nil {
			return found, nil
		}
		return nil, fmt.Errorf("%w: bearer token matches no cluster", ErrUnauthenticated)
	}
	if c.PeerCert != nil {
		for _, n := range c.PeerCert.DNSNames {
			if cl, ok := r.tlsNames[n]; ok {
				return cl, nil
			}
		}
		if cl, ok := r.tlsNames[c.PeerCert.Subject.CommonName]; ok {
			return cl, nil
		}
		return nil, fmt.Errorf("%w: client certificate %q matches no cluster", ErrUnauthenticated, c.PeerCert.Subject.CommonName)
	}
	return nil, fmt.Errorf("%w: no bearer token or client certificate", ErrUnauthenticated)
}

// Dev returns the unverified dev-mode cluster of that name, creating it.
// With clusters configured it returns the configured cluster or nil.
func (r *Registry) Dev(name string) *Cluster {
	if name == "" {
		name = r.devDefault
	}
	r.mu.RLock()
	c := r.byName[name]
	r.mu.RUnlock()
	if c != nil || !r.DevMode() {
		return c
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if c = r.byName[name]; c == nil {
		name = strings.Clone(name) // it may point into a reused request buffer
		c = newCluster(name, "", "", RolePrimary, nil, false, r.limits)
		r.byName[name] = c
	}
	return c
}

// Get returns the cluster of that name, or nil.
func (r *Registry) Get(name string) *Cluster {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.byName[name]
}

// Clusters returns every known cluster, configured first, then dev-mode ones by name.
func (r *Registry) Clusters() []*Cluster {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*Cluster, 0, len(r.byName))
	out = append(out, r.configured...)
	var dev []*Cluster
	for _, c := range r.byName {
		if !c.Verified {
			dev = append(dev, c)
		}
	}
	sort.Slice(dev, func(i, j int) bool { return dev[i].Name < dev[j].Name })
	return append(out, dev...)
}

// clusterStats are the counters of one cluster; all fields are atomics so the
// ingest path never takes a lock to count.
type clusterStats struct {
	lastWriteNanos atomic.Int64
	samples        atomic.Uint64
	histograms     atomic.Uint64
	exemplars      atomic.Uint64
	series         atomic.Uint64
	logLines       atomic.Uint64
	spans          atomic.Uint64
	mu             sync.Mutex
	rejections     map[string]uint64
	lastRejection  string
}

func newClusterStats() *clusterStats { return &clusterStats{rejections: map[string]uint64{}} }

// Written records an accepted write of metrics.
func (c *Cluster) Written(now time.Time, series, samples, histograms, exemplars int) {
	c.stats.lastWriteNanos.Store(now.UnixNano())
	c.stats.series.Add(uint64(series))
	c.stats.samples.Add(uint64(samples))
	c.stats.histograms.Add(uint64(histograms))
	c.stats.exemplars.Add(uint64(exemplars))
}

// WrittenLogs records accepted log lines.
func (c *Cluster) WrittenLogs(now time.Time, lines int) {
	c.stats.lastWriteNanos.Store(now.UnixNano())
	c.stats.logLines.Add(uint64(lines))
}

// WrittenSpans records accepted spans.
func (c *Cluster) WrittenSpans(now time.Time, spans int) {
	c.stats.lastWriteNanos.Store(now.UnixNano())
	c.stats.spans.Add(uint64(spans))
}

// Rejected records n rejected items for a reason; msg is the last error text.
func (c *Cluster) Rejected(reason string, n int, msg string) {
	c.stats.mu.Lock()
	c.stats.rejections[reason] += uint64(n)
	c.stats.lastRejection = msg
	c.stats.mu.Unlock()
}

// LastWrite is the time of the last accepted write, zero if never.
func (c *Cluster) LastWrite() time.Time {
	n := c.stats.lastWriteNanos.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// Status is the JSON view of a cluster in /api/v1/clusters.
type Status struct {
	Name          string            `json:"name"`
	Region        string            `json:"region,omitempty"`
	Zone          string            `json:"zone,omitempty"`
	Role          Role              `json:"role"`
	Labels        map[string]string `json:"labels"`
	Verified      bool              `json:"verified"`
	LastWrite     *time.Time        `json:"lastWrite"`
	SecondsSince  *float64          `json:"secondsSinceLastWrite"`
	Series        uint64            `json:"seriesReceived"`
	Samples       uint64            `json:"samplesReceived"`
	Histograms    uint64            `json:"histogramsReceived"`
	Exemplars     uint64            `json:"exemplarsReceived"`
	LogLines      uint64            `json:"logLinesReceived"`
	Spans         uint64            `json:"spansReceived"`
	Rejections    map[string]uint64 `json:"rejections"`
	LastRejection string            `json:"lastRejection,omitempty"`
	// Limits are the cluster's effective limits (0: unlimited), Usage what
	// it uses of them now.
	Limits Limits `json:"limits"`
	Usage  Usage  `json:"usage"`
}

// Usage is what a cluster uses of its limits.
type Usage struct {
	// ActiveSeries in the embedded TSDB head; null when not tracked.
	ActiveSeries     *int64 `json:"activeSeries"`
	InflightRequests int64  `json:"inflightRequests"`
}

// Status returns a snapshot of the cluster's identity and counters.
func (c *Cluster) Status(now time.Time) Status {
	s := Status{
		Name: c.Name, Region: c.Region, Zone: c.Zone, Role: c.Role, Labels: c.Labels, Verified: c.Verified,
		Series: c.stats.series.Load(), Samples: c.stats.samples.Load(), Histograms: c.stats.histograms.Load(),
		Exemplars: c.stats.exemplars.Load(), LogLines: c.stats.logLines.Load(), Spans: c.stats.spans.Load(),
		Rejections: map[string]uint64{},
		Limits:     *c.Limits(),
		Usage:      Usage{InflightRequests: c.InflightRequests()},
	}
	if lw := c.LastWrite(); !lw.IsZero() {
		s.LastWrite = &lw
		since := now.Sub(lw).Seconds()
		s.SecondsSince = &since
	}
	c.stats.mu.Lock()
	for k, v := range c.stats.rejections {
		s.Rejections[k] = v
	}
	s.LastRejection = c.stats.lastRejection
	c.stats.mu.Unlock()
	return s
}

// Statuses returns the status of every known cluster.
func (r *Registry) Statuses() []Status {
	now := r.now()
	cs := r.Clusters()
	out := make([]Status, 0, len(cs))
	for _, c := range cs {
		st := c.Status(now)
		if r.series != nil {
			if n, ok := r.series.ActiveSeries(c.Name); ok {
				st.Usage.ActiveSeries = &n
			}
		}
		out = append(out, st)
	}
	return out
}
