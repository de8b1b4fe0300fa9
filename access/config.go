package access

import (
	"fmt"

	"github.com/fleetgate/fleetgate/fleet"
)

// Config is the auth: section of the configuration file.
type Config struct {
	// AnonymousRead lets requests without a credential read every cluster.
	// Unset: true in dev mode (no clusters configured), false otherwise.
	AnonymousRead *bool `yaml:"anonymous_read"`
	// PublicHealthChecks serves GET/HEAD /health/clusters/{name} (state
	// only, for cloud DNS health checks that cannot send a token) without a
	// credential.
	PublicHealthChecks bool `yaml:"public_health_checks"`
	// Admins may change state (failover, HA pins, drills) and read everything.
	Admins []PrincipalConfig `yaml:"admins"`
	// Readers see the clusters they are scoped to.
	Readers []PrincipalConfig `yaml:"readers"`
}

// PrincipalConfig is one admin or reader and the credentials that prove it.
// Secrets never appear in the config text: tokens come from a file or an
// environment variable.
type PrincipalConfig struct {
	Name string `yaml:"name"`
	// BearerTokenFile is a file whose trimmed content is the bearer token.
	BearerTokenFile string `yaml:"bearer_token_file"`
	// BearerTokenEnv is an environment variable holding the bearer token.
	BearerTokenEnv string `yaml:"bearer_token_env"`
	// TLSNames are mTLS client certificate DNS SANs or Common Names given
	// this role (the certificate must be verified by the listener's CA).
	TLSNames []string `yaml:"tls_names"`
	// BasicAuthUsers are users of the web config (--web.config.file
	// basic_auth_users, verified by exporter-toolkit) given this role.
	BasicAuthUsers []string `yaml:"basic_auth_users"`
	// Clusters a reader may see (required for readers; ["*"] = every
	// cluster). Admins see every cluster and must not set it.
	Clusters []string `yaml:"clusters"`
}

// Validate checks the section and names the first problem by its path
// relative to the auth: section ("readers[0].clusters: ..."). How it
// meets the clusters: section is CheckClusters's. Secrets are read by New.
func (c *Config) Validate() error {
	names := map[string]string{}
	tlsNames := map[string]string{}
	users := map[string]string{}
	return c.each(func(kind string, field string, p PrincipalConfig) error {
		if p.Name == "" {
			return fmt.Errorf("%s.name: must be set", field)
		}
		if other, ok := names[p.Name]; ok {
			return fmt.Errorf("%s.name: %q is already used by %s", field, p.Name, other)
		}
		names[p.Name] = field
		if p.BearerTokenFile != "" && p.BearerTokenEnv != "" {
			return fmt.Errorf("%s: set only one of bearer_token_file and bearer_token_env", field)
		}
		if p.BearerTokenFile == "" && p.BearerTokenEnv == "" && len(p.TLSNames) == 0 && len(p.BasicAuthUsers) == 0 {
			return fmt.Errorf("%s: needs bearer_token_file, bearer_token_env, tls_names or basic_auth_users", field)
		}
		for j, n := range p.TLSNames {
			if n == "" {
				return fmt.Errorf("%s.tls_names[%d]: must not be empty", field, j)
			}
			if other, ok := tlsNames[n]; ok {
				return fmt.Errorf("%s.tls_names[%d]: %q is already given to %s", field, j, n, other)
			}
			tlsNames[n] = field
		}
		for j, u := range p.BasicAuthUsers {
			if u == "" {
				return fmt.Errorf("%s.basic_auth_users[%d]: must not be empty", field, j)
			}
			if other, ok := users[u]; ok {
				return fmt.Errorf("%s.basic_auth_users[%d]: %q is already given to %s", field, j, u, other)
			}
			users[u] = field
		}
		if kind == "admins" {
			if len(p.Clusters) > 0 {
				return fmt.Errorf("%s.clusters: admins see every cluster; remove it", field)
			}
			return nil
		}
		if len(p.Clusters) == 0 {
			return fmt.Errorf("%s.clusters: must be set (a list of cluster names, or [\"*\"] for every cluster)", field)
		}
		for j, cl := range p.Clusters {
			switch cl {
			case "*":
				if len(p.Clusters) > 1 {
					return fmt.Errorf("%s.clusters[%d]: \"*\" must be the only entry", field, j)
				}
			case "":
				return fmt.Errorf("%s.clusters[%d]: must not be empty", field, j)
			}
		}
		return nil
	})
}

// CheckClusters checks the section against the clusters: section (none:
// dev mode, where clusters appear as they send) and names the first
// problem by its path relative to the auth: section.
func (c *Config) CheckClusters(clusters []fleet.ClusterConfig) error {
	known := map[string]bool{}
	clusterTLS := map[string]string{}
	for _, cl := range clusters {
		known[cl.Name] = true
		for _, n := range cl.Credentials.TLSNames {
			clusterTLS[n] = cl.Name
		}
	}
	return c.each(func(_ string, field string, p PrincipalConfig) error {
		for j, n := range p.TLSNames {
			if cl, ok := clusterTLS[n]; ok {
				return fmt.Errorf("%s.tls_names[%d]: %q already proves cluster %q (cluster credentials do not grant read or admin)", field, j, n, cl)
			}
		}
		for j, cl := range p.Clusters {
			if cl != "*" && cl != "" && len(clusters) > 0 && !known[cl] {
				return fmt.Errorf("%s.clusters[%d]: unknown cluster %q", field, j, cl)
			}
		}
		return nil
	})
}

// each calls check on every principal, admins first, with its path
// ("admins[0]") until one fails.
func (c *Config) each(check func(kind, field string, p PrincipalConfig) error) error {
	for _, l := range []struct {
		kind string
		ps   []PrincipalConfig
	}{{"admins", c.Admins}, {"readers", c.Readers}} {
		for i, p := range l.ps {
			if err := check(l.kind, fmt.Sprintf("%s[%d]", l.kind, i), p); err != nil {
				return err
			}
		}
	}
	return nil
}

// loadToken reads a principal's bearer token from its file or environment
// variable ("" when it has none).
func (p PrincipalConfig) loadToken() (string, error) {
	return fleet.LoadBearerToken(p.BearerTokenFile, p.BearerTokenEnv)
}
