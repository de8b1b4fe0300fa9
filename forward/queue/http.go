package queue

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"time"

	"github.com/prometheus/common/model"

	"github.com/fleetgate/fleetgate/internal/httpclient"
)

// HTTPConfig is the destination part of a forwarder's config.
type HTTPConfig struct {
	// Name identifies the destination in metrics and names its queue directory.
	Name string `yaml:"name"`
	// URL of the destination's push endpoint.
	URL string `yaml:"url"`
	// Client is how fleetgate connects: authorization, basic_auth, oauth2,
	// tls_config, proxy_url, http_headers, ... (prometheus/common's
	// HTTPClientConfig) and the older headers, bearer_token_file,
	// bearer_token_env and tls keys.
	Client httpclient.Config `yaml:",inline"`
	// Timeout of one request (default 30s).
	Timeout model.Duration `yaml:"timeout"`
	// QueueMaxBytes bounds the on-disk queue (default 1 GiB).
	QueueMaxBytes int64 `yaml:"queue_max_bytes"`
	// MinBackoff and MaxBackoff bound retry delays (defaults 100ms and 30s).
	MinBackoff model.Duration `yaml:"min_backoff"`
	MaxBackoff model.Duration `yaml:"max_backoff"`
}

// UnmarshalYAML starts from prometheus/common's client defaults.
func (c *HTTPConfig) UnmarshalYAML(unmarshal func(any) error) error {
	type plain HTTPConfig
	*c = HTTPConfig{Client: httpclient.DefaultConfig()}
	return c.Client.Decoded(unmarshal((*plain)(c)))
}

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)

// Validate names the first bad field by its key relative to the
// destination ("url: ...", "tls_config: ..."; a *httpclient.FieldError for
// the client block). ValidateList puts the destination's index and name in
// front.
func (c *HTTPConfig) Validate() error {
	if !nameRE.MatchString(c.Name) {
		return fmt.Errorf("name: %q must be 1-63 letters, digits, '.', '_' or '-'", c.Name)
	}
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("url: %q is not an http(s) URL", c.URL)
	}
	for _, f := range []struct {
		key string
		v   int64
	}{{"timeout", int64(c.Timeout)}, {"min_backoff", int64(c.MinBackoff)}, {"max_backoff", int64(c.MaxBackoff)}, {"queue_max_bytes", c.QueueMaxBytes}} {
		if f.v < 0 {
			return fmt.Errorf("%s: must not be negative", f.key)
		}
	}
	if c.MaxBackoff > 0 && c.MinBackoff > c.MaxBackoff {
		return fmt.Errorf("min_backoff: %s is more than max_backoff %s", c.MinBackoff, c.MaxBackoff)
	}
	return c.Client.Validate()
}

// ValidateList checks a list of destinations (forward_logs:,
// forward_traces:) and names the first bad field by its path relative to
// the list: "[0].name: ..." or, once the name is known, "[1] (loki).url: ...".
func ValidateList(list []HTTPConfig) error {
	seen := map[string]bool{}
	for i := range list {
		f := fmt.Sprintf("[%d]", i)
		if nameRE.MatchString(list[i].Name) {
			f = fmt.Sprintf("[%d] (%s)", i, list[i].Name)
		}
		if err := list[i].Validate(); err != nil {
			return httpclient.Under(f, err)
		}
		if seen[list[i].Name] {
			return fmt.Errorf("%s.name: duplicate destination name %q", f, list[i].Name)
		}
		seen[list[i].Name] = true
	}
	return nil
}

// Options returns the queue options of the config.
func (c *HTTPConfig) Options() Options {
	return Options{MaxBytes: c.QueueMaxBytes, MinBackoff: time.Duration(c.MinBackoff), MaxBackoff: time.Duration(c.MaxBackoff)}
}

// HTTPSender posts records to a URL, classifying answers the way Prometheus
// remote-write and the OTLP spec do: 2xx delivered; 429, 502, 503, 504, other
// 5xx and network errors retried; other 4xx refused for good.
type HTTPSender struct {
	cfg     HTTPConfig
	client  *http.Client
	headers http.Header
}

// NewHTTPSender builds the sender; contentHeaders are set on every request.
func NewHTTPSender(cfg HTTPConfig, contentHeaders map[string]string) (*HTTPSender, error) {
	t := time.Duration(cfg.Timeout)
	if t == 0 {
		t = 30 * time.Second
	}
	c, err := cfg.Client.NewClient("fleetgate_forward_"+cfg.Name, t)
	if err != nil {
		return nil, err // names the key, e.g. "bearer_token_env: ..."; the caller adds the destination
	}
	s := &HTTPSender{cfg: cfg, client: c, headers: http.Header{}}
	for k, v := range contentHeaders {
		s.headers.Set(k, v)
	}
	return s, nil
}

// Post sends body to the URL.
func (s *HTTPSender) Post(ctx context.Context, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return &PermanentError{err}
	}
	req.Header = s.headers.Clone()
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("posting to %s: %w", s.cfg.Name, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	switch {
	case resp.StatusCode/100 == 2:
		return nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode/100 == 5:
		return fmt.Errorf("%s answered %s: %s", s.cfg.Name, resp.Status, bytes.TrimSpace(msg))
	}
	return &PermanentError{fmt.Errorf("%s answered %s: %s", s.cfg.Name, resp.Status, bytes.TrimSpace(msg))}
}

// OpenHTTP opens the durable queue of one HTTP destination: records are
// POSTed as they are, with the given content headers. kind prefixes the
// queue's name ("loki", "otlp").
func OpenHTTP(kind string, cfg HTTPConfig, contentHeaders map[string]string, dir string, m *Metrics, logger *slog.Logger) (*Queue, error) {
	s, err := NewHTTPSender(cfg, contentHeaders)
	if err != nil {
		return nil, err
	}
	return Open(kind+"/"+cfg.Name, dir, cfg.Options(), s.Post, m, logger)
}
