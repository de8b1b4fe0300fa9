// Package fleet is the cluster registry: who the clusters of the fleet are,
// which credential proves which cluster, and what each cluster has sent.
package fleet

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/prometheus/common/model"

	"github.com/fleetgate/fleetgate/internal/httpclient"
)

// Role of a cluster in a failover group.
type Role string

const (
	RolePrimary Role = "primary"
	RoleStandby Role = "standby"
)

// ConflictPolicy says what happens to a series whose own `cluster` label
// names a different cluster than the authenticated one.
type ConflictPolicy string

const (
	ConflictReject    ConflictPolicy = "reject"
	ConflictOverwrite ConflictPolicy = "overwrite"
)

// ClusterLabel is the label that carries cluster identity on every signal.
const ClusterLabel = "cluster"

// DevHeader names the cluster of an unauthenticated sender in dev mode.
const DevHeader = "X-Fleetgate-Cluster"

// Config is the `fleet` part of the configuration file.
type Config struct {
	// Clusters of the fleet. Empty means dev mode: identity is taken from the
	// sender and marked unverified.
	Clusters []ClusterConfig `yaml:"clusters"`
	// OnConflict is reject (default) or overwrite.
	OnConflict ConflictPolicy `yaml:"on_conflict"`
	// DevDefaultCluster names data that carries no identity at all in dev mode.
	DevDefaultCluster string `yaml:"dev_default_cluster"`
	// Limits are every cluster's limits unless its own block overrides them
	// (the `limits:` section); nil means DefaultLimits.
	Limits *Limits `yaml:"-"`
}

// defaults returns the configured default limits.
func (c *Config) defaults() Limits {
	if c.Limits == nil {
		return DefaultLimits()
	}
	return *c.Limits
}

// ClusterConfig describes one cluster.
type ClusterConfig struct {
	Name        string            `yaml:"name"`
	Region      string            `yaml:"region"`
	Zone        string            `yaml:"zone"`
	Role        Role              `yaml:"role"`
	Labels      map[string]string `yaml:"labels"`
	Credentials Credentials       `yaml:"credentials"`
	// Query, when set, makes the cluster a query source read at query time.
	Query *QueryEndpoint `yaml:"query"`
	// Limits override, field by field, the `limits:` section for this cluster.
	Limits *LimitOverrides `yaml:"limits"`
}

// Credentials names where the secrets proving a cluster live. Secrets never
// appear in the config text itself.
type Credentials struct {
	// BearerTokenFile is a file whose trimmed content is the bearer token.
	BearerTokenFile string `yaml:"bearer_token_file"`
	// BearerTokenEnv is an environment variable holding the bearer token.
	BearerTokenEnv string `yaml:"bearer_token_env"`
	// TLSNames are the mTLS client certificate DNS SANs or Common Name that
	// prove this cluster.
	TLSNames []string `yaml:"tls_names"`
}

var clusterNameRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9._-]{0,62})$`)

// IdentityConfig is the identity: section of fleetgate's configuration.
type IdentityConfig struct {
	// OnConflict is reject (default) or overwrite.
	OnConflict ConflictPolicy `yaml:"on_conflict"`
	// DevDefaultCluster names data that carries no identity at all in dev mode.
	DevDefaultCluster string `yaml:"dev_default_cluster"`
}

// Validate names the first bad key (on_conflict, dev_default_cluster).
func (c *IdentityConfig) Validate() error {
	switch c.OnConflict {
	case "", ConflictReject, ConflictOverwrite:
	default:
		return fmt.Errorf("on_conflict: %q is not one of reject, overwrite", c.OnConflict)
	}
	if c.DevDefaultCluster != "" && !clusterNameRE.MatchString(c.DevDefaultCluster) {
		return fmt.Errorf("dev_default_cluster: %q is not a valid cluster name", c.DevDefaultCluster)
	}
	return nil
}

// Validate checks the registry's config (NewRegistry calls it), naming the
// first bad field by its key in Config (on_conflict, limits.max_series,
// clusters[1].role, ...). fleetgate's config file validates the same parts
// as its identity:, limits: and clusters: sections (cmd/fleetgate).
func (c *Config) Validate() error {
	id := IdentityConfig{OnConflict: c.OnConflict, DevDefaultCluster: c.DevDefaultCluster}
	if err := id.Validate(); err != nil {
		return err
	}
	defaults := c.defaults()
	if err := defaults.Validate(); err != nil {
		return httpclient.Under("limits", err)
	}
	return httpclient.Under("clusters", ValidateClusters(c.Clusters, defaults))
}

// ValidateClusters checks the clusters: list, whose limits: blocks override
// defaults (the limits: section), and names the first bad field by its
// index and key ("[1].name: ...", "[1].limits.max_series: ..."); the error
// of a named cluster ends with its name.
func ValidateClusters(clusters []ClusterConfig, defaults Limits) error {
	seen := map[string]bool{}
	tlsSeen := map[string]string{}
	for i := range clusters {
		cl := &clusters[i]
		if err := cl.validate(fmt.Sprintf("[%d]", i), defaults, seen, tlsSeen); err != nil {
			if cl.Name == "" {
				return err
			}
			return fmt.Errorf("%w (cluster %s)", err, cl.Name)
		}
	}
	return nil
}

// validate checks one cluster; field is its index ([i]). seen and tlsSeen
// are the names and TLS names of the clusters before it.
func (cl *ClusterConfig) validate(field string, defaults Limits, seen map[string]bool, tlsSeen map[string]string) error {
	if cl.Name == "" {
		return fmt.Errorf("%s.name: must be set", field)
	}
	if !clusterNameRE.MatchString(cl.Name) {
		return fmt.Errorf("%s.name: %q must be 1-63 characters of letters, digits, '.', '_' or '-'", field, cl.Name)
	}
	if seen[cl.Name] {
		return fmt.Errorf("%s.name: duplicate cluster name %q", field, cl.Name)
	}
	seen[cl.Name] = true
	switch cl.Role {
	case "", RolePrimary, RoleStandby:
	default:
		return fmt.Errorf("%s.role: %q is not one of primary, standby", field, cl.Role)
	}
	// In key order, so that the same file always names the same key.
	for _, k := range slices.Sorted(maps.Keys(cl.Labels)) {
		if !model.LegacyValidation.IsValidLabelName(k) || strings.HasPrefix(k, "__") {
			return fmt.Errorf("%s.labels: %q is not a valid label name", field, k)
		}
		if k == ClusterLabel {
			return fmt.Errorf("%s.labels: %q is set from the cluster name and cannot be overridden", field, k)
		}
	}
	cr := cl.Credentials
	if cr.BearerTokenFile != "" && cr.BearerTokenEnv != "" {
		return fmt.Errorf("%s.credentials: set only one of bearer_token_file and bearer_token_env", field)
	}
	if cl.Query != nil {
		if err := cl.Query.Validate(); err != nil {
			return httpclient.Under(field+".query", err)
		}
	}
	if cr.BearerTokenFile == "" && cr.BearerTokenEnv == "" && len(cr.TLSNames) == 0 && cl.Query == nil {
		return fmt.Errorf("%s.credentials: a cluster needs bearer_token_file, bearer_token_env or tls_names (or a query endpoint)", field)
	}
	for _, n := range cr.TLSNames {
		if other, ok := tlsSeen[n]; ok {
			return fmt.Errorf("%s.credentials.tls_names: %q already proves cluster %q", field, n, other)
		}
		tlsSeen[n] = cl.Name
	}
	if cl.Limits != nil {
		l := cl.Limits.Apply(defaults)
		if err := l.Validate(); err != nil {
			return httpclient.Under(field+".limits", err)
		}
	}
	return nil
}

// loadToken reads the bearer token of a cluster from its file or environment variable.
func (cr Credentials) loadToken() (string, error) {
	return LoadBearerToken(cr.BearerTokenFile, cr.BearerTokenEnv)
}

// LoadBearerToken reads a bearer token from file (its trimmed content) or,
// when file is "", from the environment variable env; both "" gives "".
// An empty token is an error naming the YAML key (bearer_token_file or
// bearer_token_env) it came from. Cluster credentials and auth principals
// (inbound tokens) load their tokens with it; outbound tokens are read by
// internal/httpclient's clients on every request.
func LoadBearerToken(file, env string) (string, error) {
	switch {
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("bearer_token_file: %w", err)
		}
		t := strings.TrimSpace(string(b))
		if t == "" {
			return "", fmt.Errorf("bearer_token_file: %s is empty", file)
		}
		return t, nil
	case env != "":
		t := strings.TrimSpace(os.Getenv(env))
		if t == "" {
			return "", fmt.Errorf("bearer_token_env: environment variable %s is empty or unset", env)
		}
		return t, nil
	}
	return "", nil
}

// ErrUnauthenticated is returned when a credential proves no cluster.
var ErrUnauthenticated = errors.New("unauthenticated")
