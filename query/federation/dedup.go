package federation

import (
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunks"
)

// dedupReplicas is HA replica deduplication as a pure function: it drops the
// replica labels from the series of several replicas and merges the series
// that become equal, switching between replicas only across gaps (Thanos's
// penalty algorithm, so the merged series keeps the sampling rate of one
// replica). The result lists each merged series where its first replica
// appeared; the input is not modified (results may share sample slices with
// it). Where replicas disagree at one timestamp the replica met first wins;
// samples are picked, never combined, so native histograms merge like floats.
func dedupReplicas(series []fetched, replicaLabels []string) []fetched {
	b := labels.NewBuilder(labels.EmptyLabels())
	groups := map[string]int{}
	out := make([]fetched, 0, len(series))
	for _, f := range series {
		b.Reset(f.lset)
		b.Del(replicaLabels...)
		ls := b.Labels()
		key := ls.String()
		if i, ok := groups[key]; ok {
			out[i].samples = dedupPair(out[i].samples, f.samples)
			continue
		}
		groups[key] = len(out)
		out = append(out, fetched{lset: ls, samples: f.samples})
	}
	return out
}

// dedupPair merges two replicas of one series: it follows one replica and
// only takes a sample of the other when the followed one has nothing within
// a penalty of twice its last interval, so replicas scraping at shifted
// times do not double the sample rate and a gap in one is filled by the other.
func dedupPair(a, b []chunks.Sample) []chunks.Sample {
	if len(a) == 0 {
		return b
	}
	if len(b) == 0 {
		return a
	}
	out := make([]chunks.Sample, 0, max(len(a), len(b)))
	var (
		i, j       int
		penA, penB int64
		lastT      int64
		started    bool
	)
	seek := func(s []chunks.Sample, k int, t int64) int {
		for k < len(s) && s[k].T() < t {
			k++
		}
		return k
	}
	for {
		if started {
			i = seek(a, i, lastT+1+penA)
			j = seek(b, j, lastT+1+penB)
		}
		switch {
		case i >= len(a) && j >= len(b):
			return out
		case i >= len(a):
			out = append(out, b[j])
			lastT, penB = b[j].T(), 0
			j++
		case j >= len(b):
			out = append(out, a[i])
			lastT, penA = a[i].T(), 0
			i++
		default:
			ta, tb := a[i].T(), b[j].T()
			if ta <= tb {
				if started {
					penB = 2 * (ta - lastT)
				} else {
					penB = firstPenalty(a, i)
				}
				penA, lastT = 0, ta
				out = append(out, a[i])
				i++
			} else {
				if started {
					penA = 2 * (tb - lastT)
				} else {
					penA = firstPenalty(b, j)
				}
				penB, lastT = 0, tb
				out = append(out, b[j])
				j++
			}
		}
		started = true
	}
}

// firstPenalty is the penalty against the other replica after the first
// pick: twice the picked replica's first interval (Thanos uses a fixed 5s,
// which makes replicas shifted by more than 5s switch once at the start).
func firstPenalty(s []chunks.Sample, i int) int64 {
	if i+1 < len(s) {
		return 2 * (s[i+1].T() - s[i].T())
	}
	return 5000 // ms: scrape intervals are seconds long
}
