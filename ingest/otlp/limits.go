package otlp

import (
	"fmt"
	"net/http"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/ingest/core"
	"github.com/fleetgate/fleetgate/ingest/logtrace"
)

// The checks below run on the decoded pdata before identity stamping and
// translation, whose cost grows with the attribute counts (Prometheus's
// translator builds every label set with a labels.Builder whose Get and Set
// are linear: a resource with n attributes costs O(n²) in target_info).
// They count attributes against the cluster's limits and refuse scope and
// record attributes that name another cluster.

// limitsOf is c's limits, or the defaults in dev mode before the data names
// its cluster.
func (rc *Receiver) limitsOf(c *fleet.Cluster) fleet.Limits {
	if c != nil {
		return *c.Limits()
	}
	return rc.sig.Registry().DefaultLimits()
}

func serviceOf(res pcommon.Resource) string {
	if v, ok := res.Attributes().Get("service.name"); ok {
		return core.Truncate(v.AsString(), 128)
	}
	return "unknown_service"
}

func limitErr(format string, args ...any) error {
	return &core.Error{Status: http.StatusBadRequest, Reason: "limit", Msg: fmt.Sprintf(format, args...)}
}

// checkResource counts a resource's attributes.
func checkResource(lim *fleet.Limits, res pcommon.Resource, i int) error {
	if max := lim.MaxOTLPResourceAttributes; max > 0 && res.Attributes().Len() > max {
		return limitErr("resource %d (service.name %q) has %d attributes, more than limits.max_otlp_resource_attributes (%d)",
			i, serviceOf(res), res.Attributes().Len(), max)
	}
	return nil
}

// checkAttrs counts the attributes of a scope, data point, log record or
// span (what names it in a message) and checks the identity attributes
// among them against cluster c: another cluster is refused, or overwritten
// with on_conflict: overwrite.
func (rc *Receiver) checkAttrs(c *fleet.Cluster, lim *fleet.Limits, attrs pcommon.Map, what func() string) error {
	if max := lim.MaxOTLPAttributes; max > 0 && attrs.Len() > max {
		return limitErr("%s has %d attributes, more than limits.max_otlp_attributes (%d)", what(), attrs.Len(), max)
	}
	if c == nil {
		return nil
	}
	for _, k := range [...]string{logtrace.AttrCluster, logtrace.AttrK8sClusterName} {
		v, ok := attrs.Get(k)
		if !ok {
			continue
		}
		overwrite, perr := core.CheckIdentityValue(rc.sig.Registry(), c, k, v.AsString(), func() string { return what() + " has attribute" })
		if perr != nil {
			return perr
		}
		if overwrite {
			attrs.PutStr(k, c.Name)
		}
	}
	return nil
}

// stampMetrics checks and stamps every resource of md, then checks scope
// and data point attributes.
func (rc *Receiver) stampMetrics(c *fleet.Cluster, md pmetric.Metrics) error {
	rms := md.ResourceMetrics()
	for i := range rms.Len() {
		rm := rms.At(i)
		lim := rc.limitsOf(c)
		if err := checkResource(&lim, rm.Resource(), i); err != nil {
			return err
		}
		rcl, err := rc.sig.StampResource(c, rm.Resource())
		if err != nil {
			return err
		}
		lim = *rcl.Limits()
		svc := func() string { return serviceOf(rm.Resource()) }
		sms := rm.ScopeMetrics()
		for j := range sms.Len() {
			sm := sms.At(j)
			if err := rc.checkAttrs(rcl, &lim, sm.Scope().Attributes(), func() string {
				return fmt.Sprintf("scope %q of service %q", sm.Scope().Name(), svc())
			}); err != nil {
				return err
			}
			ms := sm.Metrics()
			for k := range ms.Len() {
				m := ms.At(k)
				if err := rc.checkPoints(rcl, &lim, m, svc); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// checkPoints checks the attributes of every data point of m.
func (rc *Receiver) checkPoints(c *fleet.Cluster, lim *fleet.Limits, m pmetric.Metric, svc func() string) error {
	check := func(i int, attrs pcommon.Map) error {
		return rc.checkAttrs(c, lim, attrs, func() string {
			return fmt.Sprintf("data point %d of metric %q (service %q)", i, core.Truncate(m.Name(), 128), svc())
		})
	}
	switch m.Type() {
	case pmetric.MetricTypeGauge:
		return eachPoint(m.Gauge().DataPoints(), check)
	case pmetric.MetricTypeSum:
		return eachPoint(m.Sum().DataPoints(), check)
	case pmetric.MetricTypeHistogram:
		return eachPoint(m.Histogram().DataPoints(), check)
	case pmetric.MetricTypeExponentialHistogram:
		return eachPoint(m.ExponentialHistogram().DataPoints(), check)
	case pmetric.MetricTypeSummary:
		return eachPoint(m.Summary().DataPoints(), check)
	}
	return nil
}

// pointSlice is a pmetric data point slice (pmetric.NumberDataPointSlice, ...).
type pointSlice[P interface{ Attributes() pcommon.Map }] interface {
	Len() int
	At(i int) P
}

// eachPoint calls check with the index and attributes of every data point
// of dps, up to the first error.
func eachPoint[P interface{ Attributes() pcommon.Map }, S pointSlice[P]](dps S, check func(int, pcommon.Map) error) error {
	for i := range dps.Len() {
		if err := check(i, dps.At(i).Attributes()); err != nil {
			return err
		}
	}
	return nil
}

// stampLogs checks and stamps every resource of ld, then checks scope and
// log record attributes. It returns the stamped identity label names.
func (rc *Receiver) stampLogs(c *fleet.Cluster, ld plog.Logs) (map[string]bool, error) {
	stamped := map[string]bool{}
	rls := ld.ResourceLogs()
	for i := range rls.Len() {
		rl := rls.At(i)
		lim := rc.limitsOf(c)
		if err := checkResource(&lim, rl.Resource(), i); err != nil {
			return nil, err
		}
		rcl, err := rc.sig.StampResource(c, rl.Resource())
		if err != nil {
			return nil, err
		}
		for _, kv := range rcl.StampLabels() {
			stamped[kv[0]] = true
		}
		lim = *rcl.Limits()
		svc := func() string { return serviceOf(rl.Resource()) }
		sls := rl.ScopeLogs()
		for j := range sls.Len() {
			sl := sls.At(j)
			if err := rc.checkAttrs(rcl, &lim, sl.Scope().Attributes(), func() string {
				return fmt.Sprintf("scope %q of service %q", sl.Scope().Name(), svc())
			}); err != nil {
				return nil, err
			}
			lrs := sl.LogRecords()
			for k := range lrs.Len() {
				if err := rc.checkAttrs(rcl, &lim, lrs.At(k).Attributes(), func() string {
					return fmt.Sprintf("log record %d of scope %q (service %q)", k, sl.Scope().Name(), svc())
				}); err != nil {
					return nil, err
				}
			}
		}
	}
	return stamped, nil
}

// checkSpans checks scope and span attributes of td (whose resources the
// logs-and-traces hub stamps).
func (rc *Receiver) checkSpans(c *fleet.Cluster, td ptrace.Traces) error {
	rss := td.ResourceSpans()
	for i := range rss.Len() {
		rs := rss.At(i)
		lim := rc.limitsOf(c)
		if err := checkResource(&lim, rs.Resource(), i); err != nil {
			return err
		}
		svc := func() string { return serviceOf(rs.Resource()) }
		sss := rs.ScopeSpans()
		for j := range sss.Len() {
			ss := sss.At(j)
			if err := rc.checkAttrs(c, &lim, ss.Scope().Attributes(), func() string {
				return fmt.Sprintf("scope %q of service %q", ss.Scope().Name(), svc())
			}); err != nil {
				return err
			}
			spans := ss.Spans()
			for k := range spans.Len() {
				sp := spans.At(k)
				if err := rc.checkAttrs(c, &lim, sp.Attributes(), func() string {
					return fmt.Sprintf("span %q (trace %s, service %q)", core.Truncate(sp.Name(), 128), sp.TraceID(), svc())
				}); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
