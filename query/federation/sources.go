package federation

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/http"
	"net/url"
	"slices"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	config_util "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/storage/remote"
	"github.com/prometheus/prometheus/util/annotations"

	"github.com/fleetgate/fleetgate/fleet"
)

func newHTTPClient(ep fleet.QueryEndpoint) (*http.Client, error) {
	return ep.Client.NewClient("fleetgate_query_source", 0)
}

// remoteReadFetcher reads with the Prometheus remote-read protocol, through
// Prometheus's own client (streamed XOR chunks, falling back to samples).
type remoteReadFetcher struct {
	client remote.ReadClient
}

func newRemoteReadFetcher(name string, ep fleet.QueryEndpoint, _ *http.Client) (*remoteReadFetcher, error) {
	u, err := url.Parse(ep.URL)
	if err != nil {
		return nil, fmt.Errorf("url: %w", err)
	}
	hc, err := ep.Client.ClientConfig()
	if err != nil {
		return nil, err
	}
	c, err := remote.NewReadClient("fleetgate-"+name, &remote.ClientConfig{
		URL:              &config_util.URL{URL: u},
		Timeout:          model.Duration(ep.TimeoutOrDefault()),
		HTTPClientConfig: hc,
		ChunkedReadLimit: 50 << 20,
	})
	if err != nil {
		return nil, err
	}
	return &remoteReadFetcher{client: c}, nil
}

func (r *remoteReadFetcher) fetch(ctx context.Context, mint, maxt int64, hints *storage.SelectHints, ms []*labels.Matcher) ([]fetched, annotations.Annotations, error) {
	if len(ms) == 0 {
		m, _ := labels.NewMatcher(labels.MatchRegexp, model.MetricNameLabel, ".+")
		ms = []*labels.Matcher{m}
	}
	// Ask for a little more than needed: the remote re-encodes the chunk
	// that crosses mint, and the first sample of a re-encoded chunk loses
	// its native histogram counter-reset hint. The extra samples are trimmed.
	from := mint
	if hints == nil || hints.Func != "series" {
		from = mint - remoteReadOverlap
		if hints != nil {
			h := *hints
			h.Start = min(h.Start, from)
			hints = &h
		}
	}
	q, err := remote.ToQuery(from, maxt, ms, hints)
	if err != nil {
		return nil, nil, err
	}
	ss, err := r.client.Read(ctx, q, true)
	if err != nil {
		return nil, nil, fmt.Errorf("remote read: %w", err)
	}
	series, ws, err := readSeriesSet(ss)
	if err != nil {
		return nil, ws, err
	}
	for i := range series {
		s := series[i].samples
		k := 0
		for k < len(s) && s[k].T() < mint {
			k++
		}
		series[i].samples = s[k:]
	}
	return series, ws, nil
}

const remoteReadOverlap = 5 * 60_000 // ms

func (r *remoteReadFetcher) labelNames(ctx context.Context, mint, maxt int64, ms []*labels.Matcher) ([]string, annotations.Annotations, error) {
	series, ws, err := r.fetch(ctx, mint, maxt, &storage.SelectHints{Start: mint, End: maxt, Func: "series"}, ms)
	if err != nil {
		return nil, ws, err
	}
	set := map[string]struct{}{}
	for _, s := range series {
		s.lset.Range(func(l labels.Label) { set[l.Name] = struct{}{} })
	}
	return slices.Sorted(maps.Keys(set)), ws, nil
}

func (r *remoteReadFetcher) labelValues(ctx context.Context, name string, mint, maxt int64, ms []*labels.Matcher) ([]string, annotations.Annotations, error) {
	if len(ms) == 0 {
		m, _ := labels.NewMatcher(labels.MatchRegexp, name, ".+")
		ms = []*labels.Matcher{m}
	}
	series, ws, err := r.fetch(ctx, mint, maxt, &storage.SelectHints{Start: mint, End: maxt, Func: "series"}, ms)
	if err != nil {
		return nil, ws, err
	}
	set := map[string]struct{}{}
	for _, s := range series {
		if v := s.lset.Get(name); v != "" {
			set[v] = struct{}{}
		}
	}
	return slices.Sorted(maps.Keys(set)), ws, nil
}

func (r *remoteReadFetcher) probe(ctx context.Context) error {
	m := labels.MustNewMatcher(labels.MatchEqual, model.MetricNameLabel, "fleetgate_probe_no_such_series")
	now := time.Now().UnixMilli()
	q, err := remote.ToQuery(now-60_000, now, []*labels.Matcher{m}, nil)
	if err != nil {
		return err
	}
	ss, err := r.client.Read(ctx, q, false)
	if err != nil {
		return err
	}
	for ss.Next() {
	}
	return ss.Err()
}

// promAPIFetcher reads raw samples from a Prometheus-compatible HTTP API
// (Prometheus, Thanos Query, Mimir, VictoriaMetrics) with a range-vector
// selector evaluated at the end of the range, the way Thanos's sidecar-less
// store proxies do it.
type promAPIFetcher struct {
	api promv1.API
}

func newPromAPIFetcher(ep fleet.QueryEndpoint, hc *http.Client) (*promAPIFetcher, error) {
	c, err := promapi.NewClient(promapi.Config{Address: ep.URL, Client: hc})
	if err != nil {
		return nil, err
	}
	return &promAPIFetcher{api: promv1.NewAPI(c)}, nil
}

// clampRange keeps label and series calls without a time range sane.
func clampRange(mint, maxt int64) (int64, int64) {
	now := time.Now().UnixMilli()
	if maxt > now+86_400_000 || maxt == math.MaxInt64 {
		maxt = now
	}
	if mint < maxt-400*86_400_000 {
		mint = maxt - 400*86_400_000
	}
	return mint, maxt
}

func apiWarnings(ws promv1.Warnings) annotations.Annotations {
	var out annotations.Annotations
	for _, w := range ws {
		out = out.Add(errors.New(w))
	}
	return out
}

func (p *promAPIFetcher) fetch(ctx context.Context, mint, maxt int64, hints *storage.SelectHints, ms []*labels.Matcher) ([]fetched, annotations.Annotations, error) {
	mint, maxt = clampRange(mint, maxt)
	sel := matchersString(ms)
	if hints != nil && hints.Func == "series" {
		sets, ws, _, err := p.api.Series(ctx, []string{sel}, time.UnixMilli(mint), time.UnixMilli(maxt))
		if err != nil {
			return nil, apiWarnings(ws), fmt.Errorf("series %s: %w", sel, err)
		}
		out := make([]fetched, 0, len(sets))
		for _, ls := range sets {
			out = append(out, fetched{lset: labelSetToLabels(ls)})
		}
		return out, apiWarnings(ws), nil
	}
	q := fmt.Sprintf("%s[%dms]", sel, maxt-mint+1)
	v, ws, _, err := p.api.Query(ctx, q, time.UnixMilli(maxt))
	if err != nil {
		return nil, apiWarnings(ws), fmt.Errorf("query %s: %w", q, err)
	}
	mat, ok := v.(model.Matrix)
	if !ok {
		return nil, apiWarnings(ws), fmt.Errorf("query %s: expected a matrix, got %s", q, v.Type())
	}
	out := make([]fetched, 0, len(mat))
	var skipped bool
	for _, ss := range mat {
		vals := make([]sample, 0, len(ss.Values))
		for _, sp := range ss.Values {
			vals = append(vals, sample{t: int64(sp.Timestamp), f: float64(sp.Value)})
		}
		f := fetched{lset: labelSetToLabels(model.LabelSet(ss.Metric)), samples: boxSamples(vals)}
		if len(ss.Histograms) > 0 {
			skipped = true
		}
		out = append(out, f)
	}
	wsa := apiWarnings(ws)
	if skipped {
		wsa = wsa.Add(errors.New("native histogram samples of a prometheus-API source are not read; use type remote_read for them"))
	}
	return out, wsa, nil
}

func labelSetToLabels(ls model.LabelSet) labels.Labels {
	b := labels.NewScratchBuilder(len(ls))
	for k, v := range ls {
		b.Add(string(k), string(v))
	}
	b.Sort()
	return b.Labels()
}

func matcherStrings(ms []*labels.Matcher) []string {
	if len(ms) == 0 {
		return nil
	}
	return []string{matchersString(ms)}
}

func (p *promAPIFetcher) labelNames(ctx context.Context, mint, maxt int64, ms []*labels.Matcher) ([]string, annotations.Annotations, error) {
	mint, maxt = clampRange(mint, maxt)
	names, ws, _, err := p.api.LabelNames(ctx, matcherStrings(ms), time.UnixMilli(mint), time.UnixMilli(maxt))
	if err != nil {
		return nil, apiWarnings(ws), fmt.Errorf("label names: %w", err)
	}
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = string(n)
	}
	return out, apiWarnings(ws), nil
}

func (p *promAPIFetcher) labelValues(ctx context.Context, name string, mint, maxt int64, ms []*labels.Matcher) ([]string, annotations.Annotations, error) {
	mint, maxt = clampRange(mint, maxt)
	vals, ws, _, err := p.api.LabelValues(ctx, name, matcherStrings(ms), time.UnixMilli(mint), time.UnixMilli(maxt))
	if err != nil {
		return nil, apiWarnings(ws), fmt.Errorf("label values of %s: %w", name, err)
	}
	out := make([]string, len(vals))
	for i, v := range vals {
		out[i] = string(v)
	}
	return out, apiWarnings(ws), nil
}

func (p *promAPIFetcher) probe(ctx context.Context) error {
	_, _, _, err := p.api.Query(ctx, "vector(1)", time.Now())
	return err
}
