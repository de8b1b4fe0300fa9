package otlp

import (
	"testing"

	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/fleetgate/fleetgate/fleet"
)

// BenchmarkCheckPoints counts the attributes of a sum's 1000 data points.
func BenchmarkCheckPoints(b *testing.B) {
	lim := fleet.DefaultLimits()
	m := pmetric.NewMetric()
	m.SetName("m")
	dps := m.SetEmptySum().DataPoints()
	for range 1000 {
		fill(dps.AppendEmpty().Attributes(), 5)
	}
	svc := func() string { return "checkout" }
	rc := &Receiver{}
	b.ReportAllocs()
	for b.Loop() {
		if err := rc.checkPoints(nil, &lim, m, svc); err != nil {
			b.Fatal(err)
		}
	}
}
