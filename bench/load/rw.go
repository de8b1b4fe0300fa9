package load

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang/snappy"
)

// RWConfig describes a remote-write load.
type RWConfig struct {
	URL              string
	Clusters         int
	FirstCluster     int // the clusters are cluster-FirstCluster, cluster-(FirstCluster+1), ...
	SeriesPerCluster int
	Version          int // 1 or 2
	SamplesPerSeries int // samples of each series in one request
	BatchSeries      int // series per request
	Concurrency      int
	Rounds           int           // every series gets SamplesPerSeries samples per round
	Step             time.Duration // timestamp distance between consecutive samples
	Interval         time.Duration // minimum wall time per round; 0: as fast as possible
	ChurnPerMinute   int           // series replaced by new ones per minute of wall time, per cluster
	TokenPrefix      string        // bearer token of cluster c is TokenPrefix+ClusterName(c); empty: none
	Start            time.Time     // timestamp of the first sample; zero: now - Rounds*SamplesPerSeries*Step
	Timeout          time.Duration
	// OnRound, if set, is called after round r is fully acknowledged.
	OnRound func(r int, acked int64)
}

// ClusterName is the name of generated cluster c.
func ClusterName(c int) string { return "cluster-" + strconv.Itoa(c) }

// RWResult is what a remote-write load sent and what came back.
type RWResult struct {
	Requests      int64
	SentSamples   int64
	AckedSamples  int64
	ByStatus      map[int]int64 // 0: transport error
	FirstError    string
	Latencies     []time.Duration
	Elapsed       time.Duration
	ActiveSeries  int
	ChurnedSeries int64
}

// Quantile of the request latencies, q in [0,1].
func (r *RWResult) Quantile(q float64) time.Duration { return quantile(r.Latencies, q) }

func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(q*float64(len(s)) + 0.5)
	if i >= len(s) {
		i = len(s) - 1
	}
	return s[i]
}

func (r *RWResult) String() string {
	var codes []string
	for c, n := range r.ByStatus {
		codes = append(codes, fmt.Sprintf("%d:%d", c, n))
	}
	sort.Strings(codes)
	s := fmt.Sprintf("requests=%d sent_samples=%d acked_samples=%d by_status=[%s] active_series=%d churned=%d elapsed=%s rate=%.0f samples/s write_latency p50=%s p90=%s p99=%s",
		r.Requests, r.SentSamples, r.AckedSamples, strings.Join(codes, " "), r.ActiveSeries, r.ChurnedSeries,
		r.Elapsed.Round(time.Millisecond), float64(r.AckedSamples)/r.Elapsed.Seconds(),
		r.Quantile(0.5), r.Quantile(0.9), r.Quantile(0.99))
	if r.FirstError != "" {
		s += "\nfirst error: " + r.FirstError
	}
	return s
}

type clusterSeries struct {
	name   string
	gens   []int
	labels [][]Label // 2.0: label sets
	v1     [][]byte  // 1.0: encoded label fields
}

func (cs *clusterSeries) set(i, version int) {
	ls := SeriesLabels(cs.name, i, cs.gens[i])
	if version == 2 {
		cs.labels[i] = ls
	} else {
		cs.v1[i] = encodeLabelsV1(ls)
	}
}

type rwJob struct {
	cs         *clusterSeries
	from, to   int
	round      int
	tsBase     int64
	done       *sync.WaitGroup
	clusterIdx int
}

// RunRW drives the load until all rounds are sent or ctx ends.
func RunRW(ctx context.Context, cfg RWConfig) (*RWResult, error) {
	if cfg.Version != 1 && cfg.Version != 2 {
		return nil, fmt.Errorf("remote-write version must be 1 or 2, got %d", cfg.Version)
	}
	if cfg.Clusters < 1 || cfg.SeriesPerCluster < 1 || cfg.SamplesPerSeries < 1 || cfg.BatchSeries < 1 || cfg.Concurrency < 1 || cfg.Rounds < 1 {
		return nil, fmt.Errorf("clusters, series, samples, batch, concurrency and rounds must be positive")
	}
	if cfg.Step <= 0 {
		cfg.Step = 15 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Minute
	}
	if cfg.Start.IsZero() {
		cfg.Start = time.Now().Add(-time.Duration(cfg.Rounds*cfg.SamplesPerSeries) * cfg.Step)
	}
	clusters := make([]*clusterSeries, cfg.Clusters)
	var wg sync.WaitGroup
	for c := range clusters {
		cs := &clusterSeries{name: ClusterName(cfg.FirstCluster + c), gens: make([]int, cfg.SeriesPerCluster)}
		if cfg.Version == 2 {
			cs.labels = make([][]Label, cfg.SeriesPerCluster)
		} else {
			cs.v1 = make([][]byte, cfg.SeriesPerCluster)
		}
		clusters[c] = cs
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range cs.gens {
				cs.set(i, cfg.Version)
			}
		}()
	}
	wg.Wait()

	res := &RWResult{ByStatus: map[int]int64{}, ActiveSeries: cfg.Clusters * cfg.SeriesPerCluster}
	var mu sync.Mutex
	var sent, acked, reqs atomic.Int64
	client := &http.Client{
		Timeout:   cfg.Timeout,
		Transport: &http.Transport{MaxIdleConnsPerHost: cfg.Concurrency, MaxConnsPerHost: cfg.Concurrency, DisableCompression: true},
	}
	jobs := make(chan rwJob)
	var workers sync.WaitGroup
	for w := 0; w < cfg.Concurrency; w++ {
		workers.Add(1)
		go func() {
			defer workers.Done()
			wk := &rwWorker{cfg: &cfg, client: client, sym: newSymbolizer()}
			for j := range jobs {
				n, ok, code, lat, err := wk.send(ctx, j)
				sent.Add(int64(n))
				acked.Add(int64(ok))
				reqs.Add(1)
				mu.Lock()
				res.ByStatus[code]++
				res.Latencies = append(res.Latencies, lat)
				if err != nil && res.FirstError == "" {
					res.FirstError = err.Error()
				}
				mu.Unlock()
				j.done.Done()
			}
		}()
	}
	start := time.Now()
	churnDone := 0
	stepMs := cfg.Step.Milliseconds()
loop:
	for r := 0; r < cfg.Rounds; r++ {
		roundStart := time.Now()
		if cfg.ChurnPerMinute > 0 {
			want := int(time.Since(start).Minutes() * float64(cfg.ChurnPerMinute))
			for ; churnDone < want; churnDone++ {
				for _, cs := range clusters {
					i := churnDone % len(cs.gens)
					cs.gens[i]++
					cs.set(i, cfg.Version)
				}
				res.ChurnedSeries += int64(len(clusters))
			}
		}
		var done sync.WaitGroup
		tsBase := cfg.Start.UnixMilli() + int64(r*cfg.SamplesPerSeries)*stepMs
		for from := 0; from < cfg.SeriesPerCluster; from += cfg.BatchSeries {
			to := min(from+cfg.BatchSeries, cfg.SeriesPerCluster)
			for ci, cs := range clusters {
				done.Add(1)
				select {
				case jobs <- rwJob{cs: cs, from: from, to: to, round: r, tsBase: tsBase, done: &done, clusterIdx: ci}:
				case <-ctx.Done():
					done.Done()
					done.Wait()
					break loop
				}
			}
		}
		done.Wait()
		if cfg.OnRound != nil {
			cfg.OnRound(r, acked.Load())
		}
		if d := cfg.Interval - time.Since(roundStart); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				break loop
			}
		}
	}
	close(jobs)
	workers.Wait()
	res.Elapsed = time.Since(start)
	res.SentSamples, res.AckedSamples, res.Requests = sent.Load(), acked.Load(), reqs.Load()
	return res, ctx.Err()
}

type rwWorker struct {
	cfg     *RWConfig
	client  *http.Client
	sym     *symbolizer
	raw     []byte
	series  []byte
	scratch []byte
	comp    []byte
	vals    []float64
	ts      []int64
}

func (w *rwWorker) send(ctx context.Context, j rwJob) (sent, acked, code int, lat time.Duration, err error) {
	cfg := w.cfg
	S := cfg.SamplesPerSeries
	w.vals, w.ts = w.vals[:0], w.ts[:0]
	for k := 0; k < S; k++ {
		w.ts = append(w.ts, j.tsBase+int64(k)*cfg.Step.Milliseconds())
		w.vals = append(w.vals, 0)
	}
	w.raw = w.raw[:0]
	if cfg.Version == 2 {
		w.sym.reset()
		w.series = w.series[:0]
		for i := j.from; i < j.to; i++ {
			for k := 0; k < S; k++ {
				w.vals[k] = Value(i, j.round*S+k)
			}
			w.series, w.scratch = appendSeriesV2(w.series, w.sym, j.cs.labels[i], w.vals, w.ts, w.scratch)
		}
		w.raw = finishV2(w.raw, w.sym, w.series)
	} else {
		for i := j.from; i < j.to; i++ {
			for k := 0; k < S; k++ {
				w.vals[k] = Value(i, j.round*S+k)
			}
			w.raw = appendSeriesV1(w.raw, j.cs.v1[i], w.vals, w.ts)
		}
	}
	sent = (j.to - j.from) * S
	w.comp = snappy.Encode(w.comp[:cap(w.comp)], w.raw)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cfg.URL, bytes.NewReader(w.comp))
	if err != nil {
		return sent, 0, 0, 0, err
	}
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("User-Agent", "fleetgate-rwload")
	if cfg.Version == 2 {
		req.Header.Set("Content-Type", "application/x-protobuf;proto=io.prometheus.write.v2.Request")
		req.Header.Set("X-Prometheus-Remote-Write-Version", "2.0.0")
	} else {
		req.Header.Set("Content-Type", "application/x-protobuf")
		req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	}
	if cfg.TokenPrefix != "" {
		req.Header.Set("Authorization", "Bearer "+cfg.TokenPrefix+j.cs.name)
	}
	t0 := time.Now()
	resp, err := w.client.Do(req)
	lat = time.Since(t0)
	if err != nil {
		return sent, 0, 0, lat, err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return sent, 0, resp.StatusCode, lat, fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	acked = sent
	if h := resp.Header.Get("X-Prometheus-Remote-Write-Samples-Written"); h != "" && cfg.Version == 2 {
		if n, err := strconv.Atoi(h); err == nil {
			acked = n
		}
	}
	return sent, acked, resp.StatusCode, lat, nil
}
