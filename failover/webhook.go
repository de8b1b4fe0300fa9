package failover

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/prometheus/common/model"

	"github.com/fleetgate/fleetgate/internal/httpclient"
)

// Webhook payload formats.
const (
	FormatAlertmanager = "alertmanager" // Alertmanager webhook payload, version 4
	FormatCloudEvents  = "cloudevents"  // CloudEvents 1.0, structured JSON
)

// SignatureHeader carries "sha256=" + hex(HMAC-SHA256(secret, body)).
const SignatureHeader = "X-Fleetgate-Signature"

// WebhookConfig is one webhook receiver.
type WebhookConfig struct {
	Name   string `yaml:"name"`
	URL    string `yaml:"url"`
	Format string `yaml:"format"`
	// The HMAC secret comes from a file or an environment variable.
	SecretFile string         `yaml:"secret_file"`
	SecretEnv  string         `yaml:"secret_env"`
	Timeout    model.Duration `yaml:"timeout"`
	// Client is how fleetgate connects: authorization, basic_auth, oauth2,
	// tls_config, proxy_url, http_headers, ... (prometheus/common's
	// HTTPClientConfig).
	Client httpclient.Config `yaml:",inline"`
}

// UnmarshalYAML starts from prometheus/common's client defaults.
func (c *WebhookConfig) UnmarshalYAML(unmarshal func(any) error) error {
	type plain WebhookConfig
	*c = WebhookConfig{Client: httpclient.DefaultConfig()}
	return c.Client.Decoded(unmarshal((*plain)(c)))
}

// Validate names the first bad field by its key relative to the webhook.
func (c *WebhookConfig) Validate() error {
	if !groupNameRE.MatchString(c.Name) {
		return fmt.Errorf("name: %q is not a valid name", c.Name)
	}
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("url: %q is not an http(s) URL", c.URL)
	}
	switch c.Format {
	case "", FormatAlertmanager, FormatCloudEvents:
	default:
		return fmt.Errorf("format: %q is not one of alertmanager, cloudevents", c.Format)
	}
	if c.SecretFile != "" && c.SecretEnv != "" {
		return fmt.Errorf("secret_file: set secret_file or secret_env, not both")
	}
	if c.Timeout < 0 {
		return fmt.Errorf("timeout: must not be negative")
	}
	return c.Client.Validate()
}

// WebhookSink posts signed decisions to a URL.
type WebhookSink struct {
	cfg         WebhookConfig
	secret      []byte
	client      *http.Client
	externalURL string
}

// NewWebhookSink builds the sink, reading its secret.
func NewWebhookSink(cfg WebhookConfig, externalURL string) (*WebhookSink, error) {
	s := &WebhookSink{cfg: cfg, externalURL: externalURL}
	if s.cfg.Format == "" {
		s.cfg.Format = FormatAlertmanager
	}
	switch {
	case cfg.SecretFile != "":
		b, err := os.ReadFile(cfg.SecretFile)
		if err != nil {
			return nil, &httpclient.FieldError{Field: "secret_file", Err: err}
		}
		s.secret = []byte(strings.TrimSpace(string(b)))
	case cfg.SecretEnv != "":
		v, ok := os.LookupEnv(cfg.SecretEnv)
		if !ok || v == "" {
			return nil, &httpclient.FieldError{Field: "secret_env", Err: fmt.Errorf("$%s is not set", cfg.SecretEnv)}
		}
		s.secret = []byte(v)
	}
	to := time.Duration(cfg.Timeout)
	if to == 0 {
		to = 10 * time.Second
	}
	c, err := cfg.Client.NewClient("fleetgate_webhook_"+cfg.Name, to)
	if err != nil {
		return nil, err // names the key, e.g. "bearer_token_env: ..."; the caller adds the webhook's path
	}
	s.client = c
	return s, nil
}

// Name implements Sink.
func (s *WebhookSink) Name() string { return "webhook:" + s.cfg.Name }

// AMWebhookMessage is Alertmanager's webhook payload, version 4.
type AMWebhookMessage struct {
	Version           string            `json:"version"`
	GroupKey          string            `json:"groupKey"`
	TruncatedAlerts   int               `json:"truncatedAlerts"`
	Status            string            `json:"status"`
	Receiver          string            `json:"receiver"`
	GroupLabels       map[string]string `json:"groupLabels"`
	CommonLabels      map[string]string `json:"commonLabels"`
	CommonAnnotations map[string]string `json:"commonAnnotations"`
	ExternalURL       string            `json:"externalURL"`
	Alerts            []AMWebhookAlert  `json:"alerts"`
}

// AMWebhookAlert is one alert of the webhook payload.
type AMWebhookAlert struct {
	Status       string            `json:"status"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
}

// CloudEvent is a CloudEvents 1.0 structured-mode JSON event.
type CloudEvent struct {
	SpecVersion     string `json:"specversion"`
	ID              string `json:"id"`
	Source          string `json:"source"`
	Type            string `json:"type"`
	Subject         string `json:"subject"`
	Time            string `json:"time"`
	DataContentType string `json:"datacontenttype"`
	Data            Event  `json:"data"`
}

// Payloads implements Sink. The body is built once, so every retry of a
// message carries the same bytes (receivers can dedupe on the event id).
func (s *WebhookSink) Payloads(ev Event) ([]json.RawMessage, error) {
	var v any
	switch s.cfg.Format {
	case FormatCloudEvents:
		v = CloudEvent{SpecVersion: "1.0", ID: fmt.Sprintf("fleetgate-%d", ev.ID), Source: s.externalURL + "/api/v1/failover/events",
			Type: "io.fleetgate.failover." + ev.Kind, Subject: ev.Group, Time: ev.Time.UTC().Format(time.RFC3339Nano),
			DataContentType: "application/json", Data: ev}
	default:
		changes := alertChanges(ev)
		if len(changes) == 0 {
			return nil, nil
		}
		msg := AMWebhookMessage{Version: "4", Receiver: s.cfg.Name, ExternalURL: s.externalURL,
			GroupLabels: map[string]string{"group": ev.Group}, CommonAnnotations: map[string]string{}, Status: "resolved"}
		msg.GroupKey = fmt.Sprintf("{}:{group=%q}", ev.Group)
		var common map[string]string
		for _, c := range changes {
			a := buildAlert(ev, c, s.externalURL)
			wa := AMWebhookAlert{Status: "firing", Labels: a.Labels.Map(), Annotations: a.Annotations.Map(),
				StartsAt: a.StartsAt, EndsAt: a.EndsAt, GeneratorURL: a.GeneratorURL}
			wa.Fingerprint = fmt.Sprintf("%016x", model.LabelsToSignature(a.Labels.Map()))
			if c.Resolved {
				wa.Status = "resolved"
			} else {
				msg.Status = "firing"
			}
			if common == nil {
				common = map[string]string{}
				for k, v := range wa.Labels {
					common[k] = v
				}
			} else {
				for k, v := range common {
					if wa.Labels[k] != v {
						delete(common, k)
					}
				}
			}
			msg.Alerts = append(msg.Alerts, wa)
		}
		msg.CommonLabels = common
		v = msg
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encoding webhook payload: %w", err)
	}
	return []json.RawMessage{b}, nil
}

// Sign returns the signature header value of body.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Deliver implements Sink.
func (s *WebhookSink) Deliver(ctx context.Context, m *Message) error {
	h := http.Header{}
	h.Set("X-Fleetgate-Delivery", fmt.Sprint(m.ID))
	h.Set("X-Fleetgate-Event", fmt.Sprint(m.EventID))
	if len(s.secret) > 0 {
		h.Set(SignatureHeader, Sign(s.secret, m.Payload))
	}
	if s.cfg.Format == FormatCloudEvents {
		h.Set("Content-Type", "application/cloudevents+json")
	}
	return postJSON(ctx, s.client, s.cfg.URL, m.Payload, h)
}
