package failover

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
)

// DNSEndpointGVR is external-dns's DNSEndpoint resource.
var DNSEndpointGVR = schema.GroupVersionResource{Group: "externaldns.k8s.io", Version: "v1alpha1", Resource: "dnsendpoints"}

// DNSSink writes one external-dns DNSEndpoint per group (with DNS config)
// listing only the serving clusters' targets, with a set identifier and a
// provider-specific weight per cluster and a short TTL.
type DNSSink struct {
	client dynamic.Interface
	groups map[string]GroupConfig
}

// NewDNSSink builds the sink for the groups that have a dns section.
func NewDNSSink(client dynamic.Interface, cfg Config) *DNSSink {
	s := &DNSSink{client: client, groups: map[string]GroupConfig{}}
	for _, g := range cfg.Groups {
		if g.DNS != nil {
			s.groups[g.Name] = g.WithDefaults()
		}
	}
	return s
}

// Name implements Sink.
func (s *DNSSink) Name() string { return "dnsendpoint" }

type dnsState struct {
	Group   string         `json:"group"`
	Serving []string       `json:"serving"`
	Weights map[string]int `json:"weights"`
}

// Payloads implements Sink: every change of a DNS group's traffic.
func (s *DNSSink) Payloads(ev Event) ([]json.RawMessage, error) {
	if _, ok := s.groups[ev.Group]; !ok || len(ev.Serving) == 0 {
		return nil, nil
	}
	switch ev.Kind {
	case KindFailover, KindFailback, KindWeights, KindOverride, KindOverrideCleared:
	default:
		return nil, nil
	}
	b, err := json.Marshal(dnsState{Group: ev.Group, Serving: ev.Serving, Weights: ev.Weights})
	if err != nil {
		return nil, fmt.Errorf("encoding DNS state: %w", err)
	}
	return []json.RawMessage{b}, nil
}

// SyncPayloads implements Syncer.
func (s *DNSSink) SyncPayloads(st []GroupStatus) ([]json.RawMessage, error) {
	var out []json.RawMessage
	for _, g := range st {
		if _, ok := s.groups[g.Name]; !ok || len(g.Serving) == 0 {
			continue
		}
		b, err := json.Marshal(dnsState{Group: g.Name, Serving: g.Serving, Weights: g.Weights})
		if err != nil {
			return nil, fmt.Errorf("encoding DNS state: %w", err)
		}
		out = append(out, b)
	}
	return out, nil
}

// Deliver implements Sink.
func (s *DNSSink) Deliver(ctx context.Context, m *Message) error {
	var st dnsState
	if err := json.Unmarshal(m.Payload, &st); err != nil {
		return fmt.Errorf("%w: decoding queued DNS state: %v", ErrPermanent, err)
	}
	return s.Apply(ctx, st.Group, st.Serving, st.Weights)
}

// Apply creates or updates the DNSEndpoint of a group.
func (s *DNSSink) Apply(ctx context.Context, group string, serving []string, weights map[string]int) error {
	g, ok := s.groups[group]
	if !ok {
		return fmt.Errorf("%w: group %q has no dns section", ErrPermanent, group)
	}
	d := g.DNS
	obj := BuildDNSEndpoint(g, serving, weights)
	res := s.client.Resource(DNSEndpointGVR).Namespace(d.Namespace)
	cur, err := res.Get(ctx, d.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		if _, err := res.Create(ctx, obj, metav1.CreateOptions{FieldManager: "fleetgate"}); err != nil {
			return fmt.Errorf("creating DNSEndpoint %s/%s: %w", d.Namespace, d.Name, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("getting DNSEndpoint %s/%s: %w", d.Namespace, d.Name, err)
	}
	cur.Object["spec"] = obj.Object["spec"]
	cur.SetLabels(mergeLabels(cur.GetLabels(), obj.GetLabels()))
	if _, err := res.Update(ctx, cur, metav1.UpdateOptions{FieldManager: "fleetgate"}); err != nil {
		return fmt.Errorf("updating DNSEndpoint %s/%s: %w", d.Namespace, d.Name, err)
	}
	return nil
}

func mergeLabels(a, b map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

// BuildDNSEndpoint renders the DNSEndpoint of a group's traffic assignment.
func BuildDNSEndpoint(g GroupConfig, serving []string, weights map[string]int) *unstructured.Unstructured {
	d := g.DNS
	cl := append([]string(nil), serving...)
	sort.Strings(cl)
	eps := make([]any, 0, len(cl))
	for _, c := range cl {
		targets := make([]any, 0, len(d.Targets[c]))
		for _, t := range d.Targets[c] {
			targets = append(targets, t)
		}
		w := weights[c]
		if w <= 0 {
			w = 100
		}
		eps = append(eps, map[string]any{
			"dnsName":       d.Hostname,
			"recordType":    d.RecordType,
			"recordTTL":     d.TTL,
			"targets":       targets,
			"setIdentifier": c,
			"providerSpecific": []any{
				map[string]any{"name": d.WeightKey, "value": strconv.Itoa(w)},
			},
			"labels": map[string]any{"fleetgate.io/cluster": c},
		})
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "externaldns.k8s.io/v1alpha1",
		"kind":       "DNSEndpoint",
		"metadata": map[string]any{
			"name":      d.Name,
			"namespace": d.Namespace,
			"labels":    map[string]any{"app.kubernetes.io/managed-by": "fleetgate", "fleetgate.io/group": g.Name},
		},
		"spec": map[string]any{"endpoints": eps},
	}}
	return u
}
