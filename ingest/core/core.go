// Package core is what every ingest path shares, metrics (ingest/pipeline)
// and logs and traces (ingest/logtrace) alike, and what every receiver
// (ingest/promrw, ingest/otlp, ingest/loki) answers with:
//
//   - identity: the cluster a request's credential proves, the dev-mode
//     lookup, the identity.on_conflict rule for data that claims another
//     cluster, and stamping the cluster labels (identity.go);
//   - per-cluster limits: in-flight requests and token buckets (Limiter,
//     limits.go), label counts and lengths (identity.go);
//   - one status-carrying error (Error) that each receiver maps to its
//     protocol's answer in one place, and bounded error messages (Problems);
//   - one bounded request body reader on http.MaxBytesReader (body.go);
//   - the time bounds: ingest.max_future for every path, 1970 and the
//     stores' retention for log lines and spans (TimeBounds, timebounds.go).
package core
