package otlp

import (
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/grafana/loki/pkg/push"
	"github.com/prometheus/prometheus/model/labels"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
)

// sanitizeLabel turns an attribute name into a Loki label name (as Loki's
// own OTLP ingestion does: every character outside [a-zA-Z0-9_] becomes _).
func sanitizeLabel(s string) string {
	var b strings.Builder
	for i, r := range s {
		ok := r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || (i > 0 && r >= '0' && r <= '9')
		if ok {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

// logsToStreams converts OTLP logs to Loki streams the way Loki ingests
// OTLP: indexed resource attributes become stream labels, other resource,
// scope and record attributes become structured metadata, with
// severity_text, trace_id and span_id; the body is the line. Attributes
// named in stamped (the identity labels) are stream labels too.
func (rc *Receiver) logsToStreams(ld plog.Logs, stamped map[string]bool) []push.Stream {
	byLabels := map[string]int{}
	var streams []push.Stream
	now := time.Now()
	rls := ld.ResourceLogs()
	for i := range rls.Len() {
		rl := rls.At(i)
		stream := map[string]string{}
		var resMD push.LabelsAdapter
		rl.Resource().Attributes().Range(func(k string, v pcommon.Value) bool {
			if l, ok := rc.logIdx[k]; ok {
				stream[l] = v.AsString()
			} else if stamped[k] {
				stream[k] = v.AsString() // identity labels (cluster, region, ...) are stream labels
			} else {
				resMD = append(resMD, push.LabelAdapter{Name: sanitizeLabel(k), Value: v.AsString()})
			}
			return true
		})
		if stream["service_name"] == "" {
			stream["service_name"] = "unknown_service"
		}
		ls := labels.FromMap(stream).String()
		idx, ok := byLabels[ls]
		if !ok {
			idx = len(streams)
			byLabels[ls] = idx
			streams = append(streams, push.Stream{Labels: ls})
		}
		sls := rl.ScopeLogs()
		for j := range sls.Len() {
			sl := sls.At(j)
			var scopeMD push.LabelsAdapter
			if n := sl.Scope().Name(); n != "" {
				scopeMD = append(scopeMD, push.LabelAdapter{Name: "scope_name", Value: n})
			}
			sl.Scope().Attributes().Range(func(k string, v pcommon.Value) bool {
				scopeMD = append(scopeMD, push.LabelAdapter{Name: sanitizeLabel(k), Value: v.AsString()})
				return true
			})
			lrs := sl.LogRecords()
			for k := range lrs.Len() {
				lr := lrs.At(k)
				ts := lr.Timestamp().AsTime()
				if lr.Timestamp() == 0 {
					ts = lr.ObservedTimestamp().AsTime()
					if lr.ObservedTimestamp() == 0 {
						ts = now
					}
				}
				md := make(push.LabelsAdapter, 0, len(resMD)+len(scopeMD)+lr.Attributes().Len()+3)
				md = append(md, resMD...)
				md = append(md, scopeMD...)
				lr.Attributes().Range(func(k string, v pcommon.Value) bool {
					md = append(md, push.LabelAdapter{Name: sanitizeLabel(k), Value: v.AsString()})
					return true
				})
				if s := lr.SeverityText(); s != "" {
					md = append(md, push.LabelAdapter{Name: "severity_text", Value: s})
				} else if n := lr.SeverityNumber(); n != plog.SeverityNumberUnspecified {
					md = append(md, push.LabelAdapter{Name: "severity_number", Value: strconv.Itoa(int(n))})
				}
				if id := lr.TraceID(); !id.IsEmpty() {
					md = append(md, push.LabelAdapter{Name: "trace_id", Value: id.String()})
				}
				if id := lr.SpanID(); !id.IsEmpty() {
					md = append(md, push.LabelAdapter{Name: "span_id", Value: id.String()})
				}
				sort.SliceStable(md, func(a, b int) bool { return md[a].Name < md[b].Name })
				streams[idx].Entries = append(streams[idx].Entries, push.Entry{Timestamp: ts, Line: lr.Body().AsString(), StructuredMetadata: md})
			}
		}
	}
	return streams
}
