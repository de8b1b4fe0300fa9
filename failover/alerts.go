package failover

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/notifier"

	"github.com/fleetgate/fleetgate/internal/httpclient"
)

// Alert names fleetgate raises.
const (
	AlertFailover       = "FleetgateFailover"
	AlertClusterDrained = "FleetgateClusterDrained"
	AlertAllBad         = "FleetgateAllClustersBad"
	AlertFrozen         = "FleetgateFailoverFrozen"
	AlertOverridden     = "FleetgateFailoverOverridden"
)

// alertChange is one alert an event fires or resolves.
type alertChange struct {
	Name     string
	Cluster  string
	Resolved bool
}

// alertChanges maps a decision to alert transitions.
func alertChanges(ev Event) []alertChange {
	switch ev.Kind {
	case KindDrain:
		return []alertChange{{Name: AlertClusterDrained, Cluster: ev.Cluster}}
	case KindRestore:
		return []alertChange{{Name: AlertClusterDrained, Cluster: ev.Cluster, Resolved: true}}
	case KindFailover, KindFailback:
		return []alertChange{{Name: AlertFailover, Resolved: len(ev.Drained) == 0}}
	case KindAllBad:
		return []alertChange{{Name: AlertAllBad}}
	case KindAllBadCleared:
		return []alertChange{{Name: AlertAllBad, Resolved: true}}
	case KindFreeze:
		return []alertChange{{Name: AlertFrozen}}
	case KindUnfreeze:
		return []alertChange{{Name: AlertFrozen, Resolved: true}}
	case KindOverride:
		return []alertChange{{Name: AlertOverridden}}
	case KindOverrideCleared:
		return []alertChange{{Name: AlertOverridden, Resolved: true}}
	}
	return nil
}

// buildAlert makes the Prometheus alert of a change. Firing alerts get no
// end here: the sender sets it when it sends.
func buildAlert(ev Event, c alertChange, externalURL string) *notifier.Alert {
	b := labels.NewScratchBuilder(5)
	b.Add(labels.AlertName, c.Name)
	b.Add("group", ev.Group)
	b.Add("mode", string(ev.Mode))
	b.Add("severity", "critical")
	if c.Cluster != "" {
		b.Add("cluster", c.Cluster)
	}
	b.Sort()
	a := b.Labels()
	ann := labels.FromStrings(
		"summary", summary(ev, c),
		"reason", ev.Reason,
		"serving", strings.Join(ev.Serving, ","),
		"drained", strings.Join(ev.Drained, ","),
		"event_id", fmt.Sprint(ev.ID),
		"event_kind", ev.Kind,
	)
	al := &notifier.Alert{Labels: a, Annotations: ann, StartsAt: ev.Time, GeneratorURL: externalURL + "/api/v1/failover/events?group=" + ev.Group}
	if c.Resolved {
		al.EndsAt = ev.Time
	}
	return al
}

func summary(ev Event, c alertChange) string {
	verb := "firing"
	if c.Resolved {
		verb = "resolved"
	}
	switch c.Name {
	case AlertClusterDrained:
		return fmt.Sprintf("cluster %s of group %s drained (%s)", c.Cluster, ev.Group, verb)
	case AlertFailover:
		return fmt.Sprintf("group %s traffic on [%s] (%s)", ev.Group, strings.Join(ev.Serving, ","), verb)
	case AlertAllBad:
		return fmt.Sprintf("every cluster of group %s is bad; %s keeps serving (%s)", ev.Group, strings.Join(ev.Serving, ","), verb)
	}
	return fmt.Sprintf("%s for group %s (%s)", c.Name, ev.Group, verb)
}

// stateAlerts are the alerts that should be firing for the live state; the
// Alertmanager sink re-sends them so Alertmanager does not time them out.
func stateAlerts(st []GroupStatus, now time.Time, externalURL string) []*notifier.Alert {
	var out []*notifier.Alert
	for _, g := range st {
		ev := Event{Time: now, Group: g.Name, Mode: g.Mode, Serving: g.Serving, Drained: g.Drained, Kind: "state",
			Reason: "re-sent: still in effect"}
		if len(g.Drained) > 0 {
			out = append(out, buildAlert(ev, alertChange{Name: AlertFailover}, externalURL))
		}
		for _, c := range g.Drained {
			ev.Cluster = c
			out = append(out, buildAlert(ev, alertChange{Name: AlertClusterDrained, Cluster: c}, externalURL))
		}
		ev.Cluster = ""
		if g.AllBad {
			out = append(out, buildAlert(ev, alertChange{Name: AlertAllBad}, externalURL))
		}
		if g.Frozen != nil {
			out = append(out, buildAlert(ev, alertChange{Name: AlertFrozen}, externalURL))
		}
		if g.Override != nil {
			out = append(out, buildAlert(ev, alertChange{Name: AlertOverridden}, externalURL))
		}
	}
	return out
}

// AlertmanagerConfig is one Alertmanager that receives fleetgate's alerts.
type AlertmanagerConfig struct {
	// URL is the Alertmanager base URL; alerts go to URL/api/v2/alerts.
	URL     string         `yaml:"url"`
	Timeout model.Duration `yaml:"timeout"`
	// Client is how fleetgate connects, the keys of Prometheus's
	// alertmanagers entries: authorization, basic_auth, oauth2, tls_config,
	// proxy_url, http_headers, ...
	Client httpclient.Config `yaml:",inline"`
}

// UnmarshalYAML starts from prometheus/common's client defaults.
func (c *AlertmanagerConfig) UnmarshalYAML(unmarshal func(any) error) error {
	type plain AlertmanagerConfig
	*c = AlertmanagerConfig{Client: httpclient.DefaultConfig()}
	return c.Client.Decoded(unmarshal((*plain)(c)))
}

// AlertmanagerSink posts alerts to Alertmanager's API v2 as an alert source,
// resolving them on recovery. Firing alerts carry an end time of
// 4 × ResendInterval and are re-sent every ResendInterval while in effect,
// the way Prometheus's rule manager does.
type AlertmanagerSink struct {
	name, url   string
	client      *http.Client
	resend      time.Duration
	externalURL string
}

// NewAlertmanagerSink builds the sink.
func NewAlertmanagerSink(cfg AlertmanagerConfig, resend time.Duration, externalURL string) (*AlertmanagerSink, error) {
	to := time.Duration(cfg.Timeout)
	if to == 0 {
		to = 10 * time.Second
	}
	c, err := cfg.Client.NewClient("fleetgate_alertmanager", to)
	if err != nil {
		return nil, err
	}
	u := strings.TrimSuffix(cfg.URL, "/")
	return &AlertmanagerSink{name: "alertmanager:" + u, url: u + "/api/v2/alerts", client: c,
		resend: resend, externalURL: externalURL}, nil
}

// Name implements Sink.
func (s *AlertmanagerSink) Name() string { return s.name }

// Payloads implements Sink: the alerts the event fires or resolves.
func (s *AlertmanagerSink) Payloads(ev Event) ([]json.RawMessage, error) {
	var as []*notifier.Alert
	for _, c := range alertChanges(ev) {
		as = append(as, buildAlert(ev, c, s.externalURL))
	}
	if len(as) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(as)
	if err != nil {
		return nil, fmt.Errorf("encoding alerts: %w", err)
	}
	return []json.RawMessage{b}, nil
}

// Deliver implements Sink.
func (s *AlertmanagerSink) Deliver(ctx context.Context, m *Message) error {
	var as []*notifier.Alert
	if err := json.Unmarshal(m.Payload, &as); err != nil {
		return fmt.Errorf("%w: decoding queued alerts: %v", ErrPermanent, err)
	}
	return s.post(ctx, as, time.Now())
}

// Resend posts the alerts in effect; it is not queued (the next resend
// repairs a failure).
func (s *AlertmanagerSink) Resend(ctx context.Context, as []*notifier.Alert) error {
	if len(as) == 0 {
		return nil
	}
	return s.post(ctx, as, time.Now())
}

func (s *AlertmanagerSink) post(ctx context.Context, as []*notifier.Alert, now time.Time) error {
	for _, a := range as {
		if a.EndsAt.IsZero() {
			a.EndsAt = now.Add(4 * s.resend)
		}
	}
	b, err := json.Marshal(as)
	if err != nil {
		return fmt.Errorf("%w: encoding alerts: %v", ErrPermanent, err)
	}
	return postJSON(ctx, s.client, s.url, b, nil)
}

// postJSON posts b; 2xx is success, 4xx (but 408/429) is permanent.
func postJSON(ctx context.Context, c *http.Client, url string, b []byte, hdr http.Header) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrPermanent, err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("POST %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	switch {
	case resp.StatusCode/100 == 2:
		return nil
	case resp.StatusCode/100 == 4 && resp.StatusCode != 408 && resp.StatusCode != 429:
		return fmt.Errorf("%w: POST %s: %s: %s", ErrPermanent, url, resp.Status, bytes.TrimSpace(body))
	}
	return fmt.Errorf("POST %s: %s: %s", url, resp.Status, bytes.TrimSpace(body))
}
