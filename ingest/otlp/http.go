package otlp

import (
	"mime"
	"net/http"
	"strconv"

	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/ingest/core"
)

// maxErrorMessage bounds an error status message; the messages themselves
// are capped where they are made (first problems and a count).
const maxErrorMessage = 16 << 10

// Register mounts POST /v1/metrics, /v1/logs and /v1/traces on mux.
func (rc *Receiver) Register(mux interface {
	HandleFunc(pattern string, f func(http.ResponseWriter, *http.Request))
}) {
	mux.HandleFunc("POST /v1/metrics", rc.serveMetrics)
	mux.HandleFunc("POST /v1/logs", rc.serveLogs)
	mux.HandleFunc("POST /v1/traces", rc.serveTraces)
}

type encoding int

const (
	encProto encoding = iota
	encJSON
)

func (e encoding) contentType() string {
	if e == encJSON {
		return "application/json"
	}
	return "application/x-protobuf"
}

// encodingOf is the response encoding for r: JSON when it sent JSON.
func encodingOf(r *http.Request) encoding {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err == nil && mt == "application/json" {
		return encJSON
	}
	return encProto
}

// readBody checks the content type and reads the (gunzipped) body.
func (rc *Receiver) readBody(r *http.Request) ([]byte, encoding, error) {
	enc := encProto
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch {
	case err != nil:
		return nil, enc, core.Errorf(http.StatusUnsupportedMediaType, "invalid", "bad Content-Type %q: want application/x-protobuf or application/json", r.Header.Get("Content-Type"))
	case mt == "application/x-protobuf" || mt == "application/protobuf":
	case mt == "application/json":
		enc = encJSON
	default:
		return nil, enc, core.Errorf(http.StatusUnsupportedMediaType, "invalid", "unsupported Content-Type %q: want application/x-protobuf or application/json", mt)
	}
	b, err := core.ReadBody(r, nil, core.BodyLimits{MaxBytes: rc.cfg.MaxRequestBytes, Key: "otlp.max_request_bytes",
		Gzip: true, MaxDecodedBytes: rc.cfg.MaxDecodedBytes})
	return b, enc, err
}

func (rc *Receiver) identify(r *http.Request) (*fleet.Cluster, error) {
	c, err := rc.sig.Registry().Identify(fleet.CredentialFromHTTP(r))
	if err != nil {
		return nil, &core.Error{Status: http.StatusUnauthorized, Reason: "unauthenticated", Msg: err.Error(), Err: err}
	}
	return c, nil
}

type marshaler interface {
	MarshalProto() ([]byte, error)
	MarshalJSON() ([]byte, error)
}

func writeResponse(w http.ResponseWriter, enc encoding, resp marshaler) {
	var b []byte
	var err error
	if enc == encJSON {
		b, err = resp.MarshalJSON()
	} else {
		b, err = resp.MarshalProto()
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", enc.contentType())
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// grpcCode maps an HTTP status to the gRPC code the OTLP spec pairs with it.
func grpcCode(s int) codes.Code {
	switch s {
	case http.StatusBadRequest:
		return codes.InvalidArgument
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusRequestEntityTooLarge:
		return codes.InvalidArgument
	case http.StatusUnsupportedMediaType:
		return codes.InvalidArgument
	case http.StatusTooManyRequests:
		return codes.ResourceExhausted
	case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
		return codes.Unavailable
	}
	return codes.Internal
}

// writeError writes a google.rpc.Status in the request's encoding, as the
// OTLP/HTTP spec asks, with Retry-After on retryable statuses.
func (rc *Receiver) writeError(w http.ResponseWriter, enc encoding, signal string, err error) {
	s := statusOf(err)
	outcome := "rejected"
	if retryable(s) {
		outcome = "retryable_error"
		w.Header().Set("Retry-After", core.RetryAfter(core.ErrorRetryAfter(err)))
	}
	rc.requests.WithLabelValues(signal, "http", outcome).Inc()
	if s >= 500 {
		rc.logger.Error("OTLP export failed", "signal", signal, "err", err)
	}
	st := status.New(grpcCode(s), core.Truncate(err.Error(), maxErrorMessage)).Proto()
	var b []byte
	if enc == encJSON {
		b, _ = protojson.Marshal(st)
	} else {
		b, _ = proto.Marshal(st)
	}
	w.Header().Set("Content-Type", enc.contentType())
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(s)
	_, _ = w.Write(b)
}

func (rc *Receiver) serveMetrics(w http.ResponseWriter, r *http.Request) {
	c, err := rc.identify(r)
	if err != nil {
		rc.writeError(w, encodingOf(r), "metrics", err)
		return
	}
	// A cluster at its in-flight or rate limit is refused before its body
	// is read or decoded.
	if err := rc.pipe.Limiter().Admit(c, core.BudgetSamples); err != nil {
		rc.writeError(w, encodingOf(r), "metrics", err)
		return
	}
	defer rc.pipe.Limiter().Done(c)
	body, enc, err := rc.readBody(r)
	if err != nil {
		rc.writeError(w, enc, "metrics", err)
		return
	}
	req := pmetricotlp.NewExportRequest()
	if err := unmarshal(req, body, enc); err != nil {
		rc.writeError(w, enc, "metrics", err)
		return
	}
	res, err := rc.ExportMetrics(r.Context(), c, req.Metrics())
	if err != nil {
		rc.writeError(w, enc, "metrics", err)
		return
	}
	resp := pmetricotlp.NewExportResponse()
	if res.Rejected > 0 || res.Message != "" {
		resp.PartialSuccess().SetRejectedDataPoints(res.Rejected)
		resp.PartialSuccess().SetErrorMessage(res.Message)
	}
	rc.requests.WithLabelValues("metrics", "http", "accepted").Inc()
	writeResponse(w, enc, resp)
}

func (rc *Receiver) serveLogs(w http.ResponseWriter, r *http.Request) {
	c, err := rc.identify(r)
	if err != nil {
		rc.writeError(w, encodingOf(r), "logs", err)
		return
	}
	// A cluster at its in-flight or rate limit is refused before its body
	// is read or decoded.
	if err := rc.pipe.Limiter().Admit(c, core.BudgetLogBytes); err != nil {
		rc.writeError(w, encodingOf(r), "logs", err)
		return
	}
	defer rc.pipe.Limiter().Done(c)
	body, enc, err := rc.readBody(r)
	if err != nil {
		rc.writeError(w, enc, "logs", err)
		return
	}
	req := plogotlp.NewExportRequest()
	if err := unmarshal(req, body, enc); err != nil {
		rc.writeError(w, enc, "logs", err)
		return
	}
	if _, err := rc.ExportLogs(r.Context(), c, req.Logs()); err != nil {
		rc.writeError(w, enc, "logs", err)
		return
	}
	rc.requests.WithLabelValues("logs", "http", "accepted").Inc()
	writeResponse(w, enc, plogotlp.NewExportResponse())
}

func (rc *Receiver) serveTraces(w http.ResponseWriter, r *http.Request) {
	c, err := rc.identify(r)
	if err != nil {
		rc.writeError(w, encodingOf(r), "traces", err)
		return
	}
	// A cluster at its in-flight or rate limit is refused before its body
	// is read or decoded.
	if err := rc.pipe.Limiter().Admit(c, core.BudgetNone); err != nil {
		rc.writeError(w, encodingOf(r), "traces", err)
		return
	}
	defer rc.pipe.Limiter().Done(c)
	body, enc, err := rc.readBody(r)
	if err != nil {
		rc.writeError(w, enc, "traces", err)
		return
	}
	req := ptraceotlp.NewExportRequest()
	if err := unmarshal(req, body, enc); err != nil {
		rc.writeError(w, enc, "traces", err)
		return
	}
	if _, err := rc.ExportTraces(r.Context(), c, req.Traces()); err != nil {
		rc.writeError(w, enc, "traces", err)
		return
	}
	rc.requests.WithLabelValues("traces", "http", "accepted").Inc()
	writeResponse(w, enc, ptraceotlp.NewExportResponse())
}

type unmarshaler interface {
	UnmarshalProto([]byte) error
	UnmarshalJSON([]byte) error
}

func unmarshal(req unmarshaler, body []byte, enc encoding) error {
	var err error
	if enc == encJSON {
		err = req.UnmarshalJSON(body)
	} else {
		err = req.UnmarshalProto(body)
	}
	if err != nil {
		return core.Errorf(http.StatusBadRequest, "invalid", "decoding OTLP %s request: %w", map[encoding]string{encProto: "protobuf", encJSON: "JSON"}[enc], err)
	}
	return nil
}
