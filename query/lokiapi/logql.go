package lokiapi

import (
	"context"
	"errors"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/grafana/loki/pkg/push"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// LogStore is what the Loki read API needs of the embedded log store.
type LogStore interface {
	// Select calls fn for each entry of matching streams in [mint, maxt] (ns).
	Select(ctx context.Context, mint, maxt int64, ms []*labels.Matcher, newestFirst bool, fn func(ls labels.Labels, lstr string, e *push.Entry) error) error
	// Series lists the label sets of streams matching any matcher set.
	Series(mint, maxt int64, sets [][]*labels.Matcher) []labels.Labels
}

// The LogQL subset fleetgate answers: stream selectors with line filters
// (|= != |~ !~), the range aggregations count_over_time, rate,
// bytes_over_time, bytes_rate, and the vector aggregations sum, min, max,
// avg, count with by/without. Anything else is a 400 naming the construct.

type lineFilter struct {
	op  string // |= != |~ !~
	s   string
	re  *regexp.Regexp
	neg bool
}

func (f *lineFilter) keep(line string) bool {
	var ok bool
	if f.re != nil {
		ok = f.re.MatchString(line)
	} else {
		ok = strings.Contains(line, f.s)
	}
	return ok != f.neg
}

// logExpr is a stream selector with line filters.
type logExpr struct {
	matchers []*labels.Matcher
	filters  []lineFilter
}

func (e *logExpr) keep(line string) bool {
	for i := range e.filters {
		if !e.filters[i].keep(line) {
			return false
		}
	}
	return true
}

type rangeExpr struct {
	op  string // count_over_time, rate, bytes_over_time, bytes_rate
	log *logExpr
	rng time.Duration
}

type aggExpr struct {
	op      string // sum, min, max, avg, count
	by      bool
	without bool
	grp     []string
	inner   metricExpr
}

type metricExpr interface{ isMetric() }

func (*rangeExpr) isMetric() {}
func (*aggExpr) isMetric()   {}

type logqlParser struct {
	in   string
	pos  int
	prom parser.Parser
}

func parseLogQL(q string, prom parser.Parser) (log *logExpr, metric metricExpr, err error) {
	p := &logqlParser{in: q, prom: prom}
	p.skip()
	if p.peek() == '{' {
		log, err = p.logExpr()
	} else {
		metric, err = p.metricExpr()
	}
	if err != nil {
		return nil, nil, err
	}
	p.skip()
	if p.pos < len(p.in) {
		return nil, nil, fmt.Errorf("parse error at position %d: unexpected %q", p.pos+1, p.rest(20))
	}
	return log, metric, nil
}

func (p *logqlParser) skip() {
	for p.pos < len(p.in) && strings.ContainsRune(" \t\r\n", rune(p.in[p.pos])) {
		p.pos++
	}
}

func (p *logqlParser) peek() byte {
	if p.pos < len(p.in) {
		return p.in[p.pos]
	}
	return 0
}

func (p *logqlParser) rest(n int) string {
	r := p.in[p.pos:]
	if len(r) > n {
		r = r[:n]
	}
	return r
}

func (p *logqlParser) expect(s string) error {
	p.skip()
	if !strings.HasPrefix(p.in[p.pos:], s) {
		return fmt.Errorf("parse error at position %d: expected %q, got %q", p.pos+1, s, p.rest(20))
	}
	p.pos += len(s)
	return nil
}

func (p *logqlParser) ident() string {
	p.skip()
	start := p.pos
	for p.pos < len(p.in) {
		c := p.in[p.pos]
		if c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' {
			p.pos++
			continue
		}
		break
	}
	return p.in[start:p.pos]
}

func (p *logqlParser) str() (string, error) {
	p.skip()
	if p.pos >= len(p.in) {
		return "", errors.New("parse error: expected a string, got end of query")
	}
	q := p.in[p.pos]
	if q != '"' && q != '`' {
		return "", fmt.Errorf("parse error at position %d: expected a quoted string, got %q", p.pos+1, p.rest(20))
	}
	end := p.pos + 1
	for end < len(p.in) && p.in[end] != q {
		if q == '"' && p.in[end] == '\\' {
			end++
		}
		end++
	}
	if end >= len(p.in) {
		return "", fmt.Errorf("parse error at position %d: unterminated string", p.pos+1)
	}
	raw := p.in[p.pos : end+1]
	p.pos = end + 1
	if q == '`' {
		return raw[1 : len(raw)-1], nil
	}
	s, err := strconv.Unquote(raw)
	if err != nil {
		return "", fmt.Errorf("parse error: bad string %s: %w", raw, err)
	}
	return s, nil
}

func (p *logqlParser) logExpr() (*logExpr, error) {
	p.skip()
	start := p.pos
	depthQuote := byte(0)
	end := -1
	for i := p.pos; i < len(p.in); i++ {
		c := p.in[i]
		if depthQuote != 0 {
			if c == '\\' && depthQuote == '"' {
				i++
			} else if c == depthQuote {
				depthQuote = 0
			}
			continue
		}
		if c == '"' || c == '`' {
			depthQuote = c
		} else if c == '}' {
			end = i
			break
		}
	}
	if end < 0 {
		return nil, fmt.Errorf("parse error at position %d: stream selector has no closing }", start+1)
	}
	sel := p.in[start : end+1]
	ms, err := p.prom.ParseMetricSelector(sel)
	if err != nil {
		return nil, fmt.Errorf("stream selector %s: %w", sel, err)
	}
	nonEmpty := false
	for _, m := range ms {
		if !m.Matches("") {
			nonEmpty = true
		}
	}
	if !nonEmpty {
		return nil, fmt.Errorf("stream selector %s: queries require at least one matcher that does not match the empty string", sel)
	}
	p.pos = end + 1
	e := &logExpr{matchers: ms}
	for {
		p.skip()
		r := p.in[p.pos:]
		var op string
		for _, o := range []string{"|=", "!=", "|~", "!~"} {
			if strings.HasPrefix(r, o) {
				op = o
			}
		}
		if op == "" {
			if strings.HasPrefix(r, "|") {
				p.pos++
				return nil, fmt.Errorf("log pipeline stage %q is not supported by fleetgate's embedded log store (only line filters |= != |~ !~); query Loki for parsers", "|"+p.ident())
			}
			return e, nil
		}
		p.pos += 2
		s, err := p.str()
		if err != nil {
			return nil, err
		}
		f := lineFilter{op: op, s: s, neg: op[0] == '!'}
		if op[1] == '~' {
			re, err := regexp.Compile(s)
			if err != nil {
				return nil, fmt.Errorf("line filter %s %q: %w", op, s, err)
			}
			f.re = re
		}
		e.filters = append(e.filters, f)
	}
}

var (
	rangeOps = map[string]bool{"count_over_time": true, "rate": true, "bytes_over_time": true, "bytes_rate": true}
	aggOps   = map[string]bool{"sum": true, "min": true, "max": true, "avg": true, "count": true}
)

func (p *logqlParser) grouping() (by, without bool, grp []string, err error) {
	save := p.pos
	kw := p.ident()
	if kw != "by" && kw != "without" {
		p.pos = save
		return false, false, nil, nil
	}
	if err := p.expect("("); err != nil {
		return false, false, nil, err
	}
	for {
		p.skip()
		if p.peek() == ')' {
			p.pos++
			break
		}
		name := p.ident()
		if name == "" {
			return false, false, nil, fmt.Errorf("parse error at position %d: expected a label name in %s(...)", p.pos+1, kw)
		}
		grp = append(grp, name)
		p.skip()
		if p.peek() == ',' {
			p.pos++
		}
	}
	return kw == "by", kw == "without", grp, nil
}

func (p *logqlParser) metricExpr() (metricExpr, error) {
	p.skip()
	if p.peek() == '(' {
		p.pos++
		e, err := p.metricExpr()
		if err != nil {
			return nil, err
		}
		return e, p.expect(")")
	}
	at := p.pos
	op := p.ident()
	switch {
	case rangeOps[op]:
		if err := p.expect("("); err != nil {
			return nil, err
		}
		le, err := p.logExpr()
		if err != nil {
			return nil, err
		}
		if err := p.expect("["); err != nil {
			return nil, err
		}
		p.skip()
		end := strings.IndexByte(p.in[p.pos:], ']')
		if end < 0 {
			return nil, errors.New("parse error: range has no closing ]")
		}
		d, err := model.ParseDuration(strings.TrimSpace(p.in[p.pos : p.pos+end]))
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("parse error: bad range [%s]", p.in[p.pos:p.pos+end])
		}
		p.pos += end + 1
		if err := p.expect(")"); err != nil {
			return nil, err
		}
		return &rangeExpr{op: op, log: le, rng: time.Duration(d)}, nil
	case aggOps[op]:
		a := &aggExpr{op: op}
		var err error
		if a.by, a.without, a.grp, err = p.grouping(); err != nil {
			return nil, err
		}
		if err := p.expect("("); err != nil {
			return nil, err
		}
		if a.inner, err = p.metricExpr(); err != nil {
			return nil, err
		}
		if err := p.expect(")"); err != nil {
			return nil, err
		}
		if !a.by && !a.without {
			if a.by, a.without, a.grp, err = p.grouping(); err != nil {
				return nil, err
			}
		}
		return a, nil
	case op == "":
		return nil, fmt.Errorf("parse error at position %d: expected a stream selector or a metric query, got %q", at+1, p.rest(20))
	}
	return nil, fmt.Errorf("LogQL function %q is not supported by fleetgate's embedded log store (supported: count_over_time, rate, bytes_over_time, bytes_rate, sum, min, max, avg, count); query Loki for the full language", op)
}

// errQueryTooLarge is returned when a metric query would hold too many entries.
var errQueryTooLarge = errors.New("query too large")

// maxMetricEntries bounds the entries one metric query holds in memory.
const maxMetricEntries = 5_000_000

type logSeries struct {
	ls    labels.Labels
	ts    []int64 // ns, sorted before evaluation
	sizes []int64
}

// evalMetric evaluates a metric query at steps (ns timestamps), returning series of points.
type point struct {
	t int64 // ns
	v float64
}

type metricSeries struct {
	ls  labels.Labels
	pts []point
}

func evalMetric(ctx context.Context, st LogStore, e metricExpr, steps []int64) ([]metricSeries, error) {
	switch m := e.(type) {
	case *rangeExpr:
		return evalRange(ctx, st, m, steps)
	case *aggExpr:
		in, err := evalMetric(ctx, st, m.inner, steps)
		if err != nil {
			return nil, err
		}
		return aggregate(m, in), nil
	}
	return nil, fmt.Errorf("unsupported expression %T", e)
}

func evalRange(ctx context.Context, st LogStore, r *rangeExpr, steps []int64) ([]metricSeries, error) {
	if len(steps) == 0 {
		return nil, nil
	}
	mint, maxt := steps[0]-r.rng.Nanoseconds(), steps[len(steps)-1]
	byStream := map[string]*logSeries{}
	total := 0
	err := st.Select(ctx, mint+1, maxt, r.log.matchers, false, func(ls labels.Labels, lstr string, e *push.Entry) error {
		if !r.log.keep(e.Line) {
			return nil
		}
		if total++; total > maxMetricEntries {
			return fmt.Errorf("%w: more than %d log lines in range; narrow the selector or the time range", errQueryTooLarge, maxMetricEntries)
		}
		s := byStream[lstr]
		if s == nil {
			s = &logSeries{ls: ls}
			byStream[lstr] = s
		}
		s.ts = append(s.ts, e.Timestamp.UnixNano())
		s.sizes = append(s.sizes, int64(len(e.Line)))
		return nil
	})
	if err != nil {
		return nil, err
	}
	rng := r.rng.Nanoseconds()
	out := make([]metricSeries, 0, len(byStream))
	for _, s := range byStream {
		idx := make([]int, len(s.ts))
		for i := range idx {
			idx[i] = i
		}
		sort.Slice(idx, func(a, b int) bool { return s.ts[idx[a]] < s.ts[idx[b]] })
		ts := make([]int64, len(idx))
		cum := make([]int64, len(idx)+1) // prefix sums of sizes
		for i, j := range idx {
			ts[i] = s.ts[j]
			cum[i+1] = cum[i] + s.sizes[j]
		}
		ms := metricSeries{ls: s.ls}
		for _, t := range steps {
			// entries in (t-rng, t]
			lo := sort.Search(len(ts), func(i int) bool { return ts[i] > t-rng })
			hi := sort.Search(len(ts), func(i int) bool { return ts[i] > t })
			if hi <= lo {
				continue
			}
			var v float64
			switch r.op {
			case "count_over_time":
				v = float64(hi - lo)
			case "rate":
				v = float64(hi-lo) / r.rng.Seconds()
			case "bytes_over_time":
				v = float64(cum[hi] - cum[lo])
			case "bytes_rate":
				v = float64(cum[hi]-cum[lo]) / r.rng.Seconds()
			}
			ms.pts = append(ms.pts, point{t, v})
		}
		if len(ms.pts) > 0 {
			out = append(out, ms)
		}
	}
	sortSeries(out)
	return out, nil
}

func sortSeries(s []metricSeries) {
	sort.Slice(s, func(i, j int) bool { return labels.Compare(s[i].ls, s[j].ls) < 0 })
}

func aggregate(a *aggExpr, in []metricSeries) []metricSeries {
	type acc struct {
		ls   labels.Labels
		vals map[int64][]float64
	}
	groups := map[string]*acc{}
	var b labels.Builder
	for _, s := range in {
		var g labels.Labels
		switch {
		case a.by:
			g = s.ls.MatchLabels(true, a.grp...)
		case a.without:
			b.Reset(s.ls)
			b.Del(a.grp...)
			g = b.Labels()
		default:
			g = labels.EmptyLabels()
		}
		k := g.String()
		ac := groups[k]
		if ac == nil {
			ac = &acc{ls: g, vals: map[int64][]float64{}}
			groups[k] = ac
		}
		for _, p := range s.pts {
			ac.vals[p.t] = append(ac.vals[p.t], p.v)
		}
	}
	out := make([]metricSeries, 0, len(groups))
	for _, ac := range groups {
		ms := metricSeries{ls: ac.ls}
		for t, vs := range ac.vals {
			var v float64
			switch a.op {
			case "sum", "avg":
				for _, x := range vs {
					v += x
				}
				if a.op == "avg" {
					v /= float64(len(vs))
				}
			case "min":
				v = math.Inf(1)
				for _, x := range vs {
					v = math.Min(v, x)
				}
			case "max":
				v = math.Inf(-1)
				for _, x := range vs {
					v = math.Max(v, x)
				}
			case "count":
				v = float64(len(vs))
			}
			ms.pts = append(ms.pts, point{t, v})
		}
		sort.Slice(ms.pts, func(i, j int) bool { return ms.pts[i].t < ms.pts[j].t })
		out = append(out, ms)
	}
	sortSeries(out)
	return out
}

// logEntry is one selected line.
type logEntry struct {
	lstr string
	ls   labels.Labels
	t    int64
	line string
	md   push.LabelsAdapter
}

// selectLogs returns up to limit entries in [mint, maxt], newest first when backward.
func selectLogs(ctx context.Context, st LogStore, e *logExpr, mint, maxt int64, limit int, backward bool) ([]logEntry, error) {
	var out []logEntry
	less := func(i, j int) bool {
		if backward {
			return out[i].t > out[j].t
		}
		return out[i].t < out[j].t
	}
	err := st.Select(ctx, mint, maxt, e.matchers, backward, func(ls labels.Labels, lstr string, en *push.Entry) error {
		if !e.keep(en.Line) {
			return nil
		}
		out = append(out, logEntry{lstr: lstr, ls: ls, t: en.Timestamp.UnixNano(), line: en.Line, md: en.StructuredMetadata})
		if len(out) >= 4*limit+1024 {
			sort.SliceStable(out, less)
			out = out[:limit]
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.SliceStable(out, less)
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}
