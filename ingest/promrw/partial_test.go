package promrw

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/ingest/pipeline"
	"github.com/fleetgate/fleetgate/store/metrics"
)

// goldenPartial holds Prometheus 3.16's answers to partialCorpus, recorded
// from the real binary by `make rw-diff`.
const goldenPartial = "testdata/prometheus-3.16-partial.json"

// devCluster is the cluster the corpus is sent as (dev mode header).
const devCluster = "rwdiff"

// rwAnswer is what a receiver answered to one request.
type rwAnswer struct {
	Status int `json:"status"`
	// Written holds the X-Prometheus-Remote-Write-*-Written headers; nil
	// when the answer has none of them.
	Written *rwWritten `json:"written,omitempty"`
	// Body is the start of the error message: for information, not compared.
	Body string `json:"body,omitempty"`
}

type rwWritten struct {
	Samples    int `json:"samples"`
	Histograms int `json:"histograms"`
	Exemplars  int `json:"exemplars"`
}

func (a rwAnswer) String() string {
	if a.Written == nil {
		return strconv.Itoa(a.Status)
	}
	return fmt.Sprintf("%d s=%d h=%d e=%d", a.Status, a.Written.Samples, a.Written.Histograms, a.Written.Exemplars)
}

// sameAnswer compares status and Written counts (not the body).
func sameAnswer(a, b rwAnswer) bool {
	return a.Status == b.Status && reflect.DeepEqual(a.Written, b.Written)
}

// answerFrom reads an HTTP answer.
func answerFrom(status int, h http.Header, body []byte) rwAnswer {
	a := rwAnswer{Status: status}
	if status >= 300 {
		// Millisecond timestamps change from run to run.
		a.Body = msTimestamp.ReplaceAllString(strings.TrimSpace(string(body)), "<ms>")
		if len(a.Body) > 200 {
			a.Body = a.Body[:200] + "..."
		}
	}
	var w rwWritten
	found := false
	for _, f := range []struct {
		name string
		dst  *int
	}{{headerSamplesWritten, &w.Samples}, {headerHistogramsWritten, &w.Histograms}, {headerExemplarsWritten, &w.Exemplars}} {
		v := h.Get(f.name)
		if v == "" {
			continue
		}
		found = true
		n, err := strconv.Atoi(v)
		if err != nil {
			n = -1
		}
		*f.dst = n
	}
	if found {
		a.Written = &w
	}
	return a
}

var msTimestamp = regexp.MustCompile(`\b\d{13}\b`)

// rwResult is one run of one case against one receiver.
type rwResult struct {
	Case   string     `json:"case"`
	Proto  string     `json:"protocol"`
	Doc    string     `json:"doc"`
	Setup  []rwAnswer `json:"setup,omitempty"`
	Answer rwAnswer   `json:"answer"`
	// Stored is what is queryable afterwards: series (without the cluster
	// label) -> samples as "<ms from base>=<value>" or "<ms>=h(count,sum)".
	Stored map[string][]string `json:"stored"`
	// Exemplars: series -> "<ms from base>=<value><labels>".
	Exemplars map[string][]string `json:"exemplars,omitempty"`
}

func (r rwResult) id() string { return caseID(r.Proto, r.Case) }

// rwGolden is the golden file.
type rwGolden struct {
	Prometheus struct {
		Version   string `json:"version"`
		GoVersion string `json:"goVersion"`
		// Module is the module the binary was built from (its Go build info).
		Module string `json:"module"`
	} `json:"prometheus"`
	Command string     `json:"command"`
	Args    []string   `json:"args"`
	Config  string     `json:"config"`
	Results []rwResult `json:"results"`
}

func formatValue(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

func storedFloat(dt int64, v float64) string { return fmt.Sprintf("%+d=%s", dt, formatValue(v)) }

func storedHist(dt int64, count, sum float64) string {
	return fmt.Sprintf("%+d=h(%s,%s)", dt, formatValue(count), formatValue(sum))
}

func storedExemplar(dt int64, v float64, ls labels.Labels) string {
	return fmt.Sprintf("%+d=%s%s", dt, formatValue(v), ls.String())
}

// seriesKey is a series' labels without the cluster label fleetgate stamps
// (a cluster label sent with the series stays).
func seriesKey(ls labels.Labels) string {
	if ls.Get(fleet.ClusterLabel) != devCluster {
		return ls.String()
	}
	return labels.NewBuilder(ls).Del(fleet.ClusterLabel).Labels().String()
}

// rwDifference is an intentional difference of fleetgate from Prometheus 3.16
// for one case: fleetgate's answer to the request under test (when it
// differs) and whether what is stored differs.
type rwDifference struct {
	status  int        // fleetgate's status; 0: the same as Prometheus's
	written *rwWritten // fleetgate's Written counts when status is set
	stored  bool       // what is queryable afterwards differs
	reason  string
}

// intentionalDifferences are the documented ways fleetgate answers a corpus
// case unlike Prometheus 3.16 (README: Contracts -> Remote-write). Keys are
// caseID(proto, name).
var intentionalDifferences = map[string]rwDifference{
	// 1.0: Prometheus stops at the first refused sample and rolls the whole
	// request back; fleetgate keeps the valid samples (same status).
	caseID(protoV1Name, "ooo_sample_among_valid"):           {stored: true, reason: whyRollback},
	caseID(protoV1Name, "duplicate_sample"):                 {stored: true, reason: whyRollback},
	caseID(protoV1Name, "too_old_sample"):                   {stored: true, reason: whyRollback},
	caseID(protoV1Name, "histogram_count_too_small"):        {stored: true, reason: whyRollback},
	caseID(protoV1Name, "histogram_negative_count"):         {stored: true, reason: whyRollback},
	caseID(protoV1Name, "histogram_custom_bounds_unsorted"): {stored: true, reason: whyRollback},
	caseID(protoV1Name, "histogram_unknown_schema"):         {stored: true, reason: whyRollback},
	caseID(protoV1Name, "histogram_ooo"):                    {stored: true, reason: whyRollback},
	caseID(protoV1Name, "exemplar_on_rejected_sample"):      {stored: true, reason: whyRollback},
	caseID(protoV1Name, "mixed_valid_invalid"):              {stored: true, reason: whyRollback},

	// 1.0: Prometheus drops a series with invalid labels and answers 204.
	caseID(protoV1Name, "no_metric_name"):           {status: 400, reason: whyInvalidLabelsV1},
	caseID(protoV1Name, "empty_metric_name"):        {status: 400, reason: whyInvalidLabelsV1},
	caseID(protoV1Name, "empty_label_set"):          {status: 400, reason: whyInvalidLabelsV1},
	caseID(protoV1Name, "invalid_utf8_label_value"): {status: 400, reason: whyInvalidLabelsV1},
	caseID(protoV1Name, "invalid_utf8_label_name"):  {status: 400, reason: whyInvalidLabelsV1},
	caseID(protoV1Name, "empty_label_name"):         {status: 400, reason: whyInvalidLabelsV1},
	caseID(protoV1Name, "duplicate_label_names"):    {status: 400, reason: whyInvalidLabelsV1},

	caseID(protoV1Name, "too_many_labels"):      {status: 400, stored: true, reason: whyLabelLimits},
	caseID(protoV2Name, "too_many_labels"):      {status: 400, written: &rwWritten{Samples: 1}, stored: true, reason: whyLabelLimits},
	caseID(protoV1Name, "label_value_too_long"): {status: 400, stored: true, reason: whyLabelLimits},
	caseID(protoV2Name, "label_value_too_long"): {status: 400, written: &rwWritten{Samples: 1}, stored: true, reason: whyLabelLimits},

	caseID(protoV1Name, "other_cluster_label"): {status: 400, stored: true, reason: whyIdentity},
	caseID(protoV2Name, "other_cluster_label"): {status: 400, written: &rwWritten{}, stored: true, reason: whyIdentity},

	caseID(protoV1Name, "snappy_claims_huge"): {status: 413, reason: whyDecodedSize},
	caseID(protoV2Name, "snappy_claims_huge"): {status: 413, reason: whyDecodedSize},

	caseID(protoV1Name, "far_future_sample"): {stored: true, reason: whyRollback},
}

const (
	whyRollback = "1.0: Prometheus rolls the whole request back on the first refused sample, and a 1.0 sender drops a 400 without retrying, " +
		"so the valid samples would be lost; fleetgate keeps them, as both do in 2.0"
	whyInvalidLabelsV1 = "1.0: Prometheus drops a series with invalid labels silently (204; its own code says it should be a 400); " +
		"fleetgate answers 400 naming it and keeps the valid series, as both do in 2.0"
	whyLabelLimits = "fleetgate's label limits (at most 64 labels, values of at most 4096 bytes by default): 400 naming the series"
	whyIdentity    = "fleetgate's identity rule: a series claiming another cluster refuses the whole request (identity.on_conflict: reject)"
	whyDecodedSize = "a snappy body announcing more than remote_write.max_decoded_bytes is a 413 (Prometheus: 400 over 32 MiB decoded, 413 only for the body)"
)

// compareResults lists how fg differs from prom beyond the intentional
// differences, and the differences that no longer apply.
func compareResults(prom, fg rwResult) []string {
	problems := diffResults(prom, fg)
	for i, p := range problems {
		if len(p) > 1000 {
			problems[i] = p[:1000] + "..."
		}
	}
	return problems
}

func diffResults(prom, fg rwResult) []string {
	var problems []string
	if len(prom.Setup) != len(fg.Setup) {
		return []string{fmt.Sprintf("%d setup answers, Prometheus %d", len(fg.Setup), len(prom.Setup))}
	}
	for i := range prom.Setup {
		if !sameAnswer(prom.Setup[i], fg.Setup[i]) {
			problems = append(problems, fmt.Sprintf("setup request %d: fleetgate %s (%s), Prometheus %s (%s)", i, fg.Setup[i], fg.Setup[i].Body, prom.Setup[i], prom.Setup[i].Body))
		}
	}
	d, listed := intentionalDifferences[prom.id()]
	storedSame := reflect.DeepEqual(prom.Stored, fg.Stored) && reflect.DeepEqual(prom.Exemplars, fg.Exemplars)
	answerSame := sameAnswer(prom.Answer, fg.Answer)
	switch {
	case !listed:
		if !answerSame {
			problems = append(problems, fmt.Sprintf("answer: fleetgate %s (%s), Prometheus %s (%s)", fg.Answer, fg.Answer.Body, prom.Answer, prom.Answer.Body))
		}
		if !storedSame {
			problems = append(problems, fmt.Sprintf("stored: fleetgate %v %v, Prometheus %v %v", fg.Stored, fg.Exemplars, prom.Stored, prom.Exemplars))
		}
	default:
		want := prom.Answer
		if d.status != 0 {
			want = rwAnswer{Status: d.status, Written: d.written}
		}
		if !sameAnswer(want, fg.Answer) {
			problems = append(problems, fmt.Sprintf("answer: fleetgate %s (%s), want %s (intentional difference: %s)", fg.Answer, fg.Answer.Body, want, d.reason))
		}
		if !d.stored && !storedSame {
			problems = append(problems, fmt.Sprintf("stored: fleetgate %v %v, Prometheus %v %v", fg.Stored, fg.Exemplars, prom.Stored, prom.Exemplars))
		}
		if answerSame && storedSame {
			problems = append(problems, fmt.Sprintf("listed as an intentional difference (%s) but fleetgate now answers and stores as Prometheus does: remove it", d.reason))
		}
	}
	return problems
}

func loadGolden(t testing.TB) *rwGolden {
	t.Helper()
	b, err := os.ReadFile(goldenPartial)
	require.NoError(t, err, "run `make rw-diff` to record it")
	var g rwGolden
	require.NoError(t, json.Unmarshal(b, &g))
	return &g
}

// inProcess runs one case against a fresh fleetgate handler, pipeline and
// TSDB configured as bin/fleetgate's dev mode.
func inProcess(t *testing.T, c rwCase, proto string) rwResult {
	dir := t.TempDir()
	reg, err := fleet.NewRegistry(fleet.Config{})
	require.NoError(t, err)
	logger := slog.New(slog.DiscardHandler)
	st, err := metrics.Open(metrics.Config{Path: filepath.Join(dir, "data"), MaxExemplars: 100_000}, nil, logger)
	require.NoError(t, err)
	defer st.Close()
	p, err := pipeline.New(pipeline.Config{}, reg, st, st.Metadata(), nil, logger)
	require.NoError(t, err)
	h, err := NewHandler(Config{}, p, nil, logger)
	require.NoError(t, err)

	base := time.Now().Truncate(time.Second).UnixMilli()
	res := rwResult{Case: c.name, Proto: proto, Doc: c.doc}
	send := func(r rwRequest) rwAnswer {
		body, ct, ce, err := r.encode(proto, base)
		require.NoError(t, err)
		req := httptest.NewRequest(http.MethodPost, "/api/v1/write", bytes.NewReader(body))
		req.Header.Set("Content-Type", ct)
		req.Header.Set("Content-Encoding", ce)
		req.Header.Set(fleet.DevHeader, devCluster)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return answerFrom(w.Code, w.Header(), w.Body.Bytes())
	}
	for _, s := range c.setup {
		res.Setup = append(res.Setup, send(s))
	}
	res.Answer = send(c.req)
	res.Stored, res.Exemplars = storedIn(t, st, base)
	return res
}

// storedIn reads every series and exemplar of st, as the runner reads them
// through the query API.
func storedIn(t *testing.T, st *metrics.Store, base int64) (map[string][]string, map[string][]string) {
	ctx := context.Background()
	m := labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+")
	q, err := st.Querier(math.MinInt64, math.MaxInt64)
	require.NoError(t, err)
	defer q.Close()
	stored := map[string][]string{}
	ss := q.Select(ctx, true, nil, m)
	var it chunkenc.Iterator
	for ss.Next() {
		s := ss.At()
		var pts []string
		it = s.Iterator(it)
		for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
			switch vt {
			case chunkenc.ValFloat:
				ts, v := it.At()
				if !value.IsStaleNaN(v) {
					pts = append(pts, storedFloat(ts-base, v))
				}
			case chunkenc.ValHistogram, chunkenc.ValFloatHistogram:
				ts, fh := it.AtFloatHistogram(nil)
				if !value.IsStaleNaN(fh.Sum) {
					pts = append(pts, storedHist(ts-base, fh.Count, fh.Sum))
				}
			}
		}
		if len(pts) > 0 {
			stored[seriesKey(s.Labels())] = pts
		}
	}
	require.NoError(t, ss.Err())

	eq, err := st.ExemplarQueryable().ExemplarQuerier(ctx)
	require.NoError(t, err)
	res, err := eq.Select(math.MinInt64, math.MaxInt64, []*labels.Matcher{m})
	require.NoError(t, err)
	var exemplars map[string][]string
	for _, r := range res {
		if len(r.Exemplars) == 0 {
			continue
		}
		if exemplars == nil {
			exemplars = map[string][]string{}
		}
		k := seriesKey(r.SeriesLabels)
		for _, e := range r.Exemplars {
			exemplars[k] = append(exemplars[k], storedExemplar(e.Ts-base, e.Value, e.Labels))
		}
	}
	return stored, exemplars
}

// TestPartialAcceptanceMatchesPrometheus replays the partial-acceptance corpus
// against the handler (real pipeline, real TSDB) and checks status, Written
// counts and what is stored against Prometheus 3.16's recorded answers.
func TestPartialAcceptanceMatchesPrometheus(t *testing.T) {
	g := loadGolden(t)
	golden := map[string]rwResult{}
	for _, r := range g.Results {
		golden[r.id()] = r
	}
	seen := map[string]bool{}
	for _, c := range partialCorpus {
		for _, proto := range c.protocols() {
			id := caseID(proto, c.name)
			seen[id] = true
			t.Run(id, func(t *testing.T) {
				prom, ok := golden[id]
				require.True(t, ok, "%s is not in %s: run `make rw-diff`", id, goldenPartial)
				fg := inProcess(t, c, proto)
				require.Empty(t, compareResults(prom, fg))
			})
		}
	}
	for id := range golden {
		require.True(t, seen[id], "%s in %s is no longer in the corpus: run `make rw-diff`", id, goldenPartial)
	}
	for id := range intentionalDifferences {
		require.True(t, seen[id], "intentional difference %s names no corpus case", id)
	}
}

// TestCorpusNames keeps corpus names unique and usable as file-name parts.
func TestCorpusNames(t *testing.T) {
	var names []string
	for _, c := range partialCorpus {
		require.Regexp(t, `^[a-z0-9_]+$`, c.name)
		names = append(names, c.name)
	}
	sorted := slices.Clone(names)
	slices.Sort(sorted)
	require.Len(t, slices.Compact(sorted), len(names), "duplicate case names")
}
