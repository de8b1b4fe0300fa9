// Package loki receives Loki push requests (POST /loki/api/v1/push):
// snappy-compressed protobuf and JSON, optionally gzip-encoded, with
// structured metadata, decoded into github.com/grafana/loki/pkg/push types.
package loki

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/golang/snappy"
	"github.com/grafana/loki/pkg/push"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/fleetgate/fleetgate/fleet"
	"github.com/fleetgate/fleetgate/ingest/core"
	"github.com/fleetgate/fleetgate/ingest/logtrace"
)

// Config of the Loki push receiver.
type Config struct {
	// MaxRequestBytes bounds the (compressed) body, MaxDecodedBytes the
	// decoded message; larger requests get 413.
	MaxRequestBytes int `yaml:"max_request_bytes"`
	MaxDecodedBytes int `yaml:"max_decoded_bytes"`
}

// Validate names the first bad field by its key relative to the section
// (cmd/fleetgate puts the section's path in front).
func (c *Config) Validate() error {
	if c.MaxRequestBytes < 0 {
		return fmt.Errorf("max_request_bytes: must not be negative, got %d", c.MaxRequestBytes)
	}
	if c.MaxDecodedBytes < 0 {
		return fmt.Errorf("max_decoded_bytes: must not be negative, got %d", c.MaxDecodedBytes)
	}
	return nil
}

// Handler serves POST /loki/api/v1/push.
type Handler struct {
	cfg      Config
	sig      *logtrace.Hub
	logger   *slog.Logger
	requests *prometheus.CounterVec
}

// DefaultConfig is the section's defaults: the value a key left out (or
// set to 0) keeps.
func DefaultConfig() Config {
	return Config{MaxRequestBytes: 16 << 20, MaxDecodedBytes: 64 << 20}
}

// NewHandler builds the receiver. r may be nil.
func NewHandler(cfg Config, sig *logtrace.Hub, r prometheus.Registerer, logger *slog.Logger) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxRequestBytes == 0 {
		cfg.MaxRequestBytes = DefaultConfig().MaxRequestBytes
	}
	if cfg.MaxDecodedBytes == 0 {
		cfg.MaxDecodedBytes = DefaultConfig().MaxDecodedBytes
	}
	h := &Handler{cfg: cfg, sig: sig, logger: logger,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetgate_loki_push_requests_total", Help: "Loki push requests by format and HTTP status code.",
		}, []string{"format", "code"}),
	}
	if r != nil {
		if err := r.Register(h.requests); err != nil {
			return nil, fmt.Errorf("registering Loki push metrics: %w", err)
		}
	}
	return h, nil
}

// Format of a push body.
type Format int

const (
	FormatProtobuf Format = iota // snappy-compressed push.PushRequest
	FormatJSON
)

func (f Format) String() string {
	if f == FormatJSON {
		return "json"
	}
	return "protobuf"
}

func errStatus(status int, format string, args ...any) error {
	return core.Errorf(status, "invalid", format, args...)
}

// Status is the HTTP status for an error of Decode or the logs-and-traces hub.
func Status(err error) int { return core.ErrorStatus(err) }

// FormatOf chooses the body format from the Content-Type: protobuf when
// empty or application/x-protobuf, JSON for application/json.
func FormatOf(contentType string) (Format, error) {
	if contentType == "" {
		return FormatProtobuf, nil
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return 0, errStatus(http.StatusUnsupportedMediaType, "bad Content-Type %q: %v", contentType, err)
	}
	switch mt {
	case "application/x-protobuf", "application/protobuf":
		return FormatProtobuf, nil
	case "application/json":
		return FormatJSON, nil
	}
	return 0, errStatus(http.StatusUnsupportedMediaType, "unsupported Content-Type %q: want application/x-protobuf (snappy) or application/json", contentType)
}

// Decode decodes a push body (already gunzipped) of the given format.
func Decode(body []byte, f Format, maxDecoded int) (*push.PushRequest, error) {
	req := &push.PushRequest{}
	switch f {
	case FormatJSON:
		if err := decodeJSON(body, req); err != nil {
			return nil, errStatus(http.StatusBadRequest, "decoding JSON push request: %w", err)
		}
	default:
		n, err := snappy.DecodedLen(body)
		if err != nil {
			return nil, errStatus(http.StatusBadRequest, "decoding snappy body of protobuf push request: %w", err)
		}
		if n > maxDecoded {
			return nil, errStatus(http.StatusRequestEntityTooLarge, "decoded push request is %d bytes, more than loki_push.max_decoded_bytes (%d)", n, maxDecoded)
		}
		raw, err := snappy.Decode(nil, body)
		if err != nil {
			return nil, errStatus(http.StatusBadRequest, "decoding snappy body of protobuf push request: %w", err)
		}
		if err := req.Unmarshal(raw); err != nil {
			return nil, errStatus(http.StatusBadRequest, "decoding protobuf push request: %w", err)
		}
	}
	return req, nil
}

// jsonPush is Loki's JSON push shape.
type jsonPush struct {
	Streams []struct {
		Stream map[string]string   `json:"stream"`
		Values [][]json.RawMessage `json:"values"`
	} `json:"streams"`
}

func decodeJSON(body []byte, req *push.PushRequest) error {
	var jp jsonPush
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&jp); err != nil {
		return err
	}
	req.Streams = make([]push.Stream, 0, len(jp.Streams))
	for i, s := range jp.Streams {
		ls := labels.FromMap(s.Stream).String()
		st := push.Stream{Labels: ls, Entries: make([]push.Entry, 0, len(s.Values))}
		for j, v := range s.Values {
			if len(v) < 2 || len(v) > 3 {
				return fmt.Errorf("stream %d %s: value %d has %d elements, want [timestamp, line] or [timestamp, line, metadata]", i, ls, j, len(v))
			}
			var tsStr, line string
			if err := json.Unmarshal(v[0], &tsStr); err != nil {
				return fmt.Errorf("stream %d %s: value %d: timestamp must be a string of nanoseconds: %w", i, ls, j, err)
			}
			ns, err := strconv.ParseInt(tsStr, 10, 64)
			if err != nil {
				return fmt.Errorf("stream %d %s: value %d: timestamp %q is not nanoseconds since the epoch", i, ls, j, tsStr)
			}
			if err := json.Unmarshal(v[1], &line); err != nil {
				return fmt.Errorf("stream %d %s: value %d: line must be a string: %w", i, ls, j, err)
			}
			e := push.Entry{Timestamp: time.Unix(0, ns).UTC(), Line: line}
			if len(v) == 3 {
				var md map[string]string
				if err := json.Unmarshal(v[2], &md); err != nil {
					return fmt.Errorf("stream %d %s: value %d: structured metadata must be an object of strings: %w", i, ls, j, err)
				}
				for _, k := range sortedKeys(md) {
					e.StructuredMetadata = append(e.StructuredMetadata, push.LabelAdapter{Name: k, Value: md[k]})
				}
			}
			st.Entries = append(st.Entries, e)
		}
		req.Streams = append(req.Streams, st)
	}
	return nil
}

// EncodeJSON writes req in Loki's JSON push shape (used by tests and the forwarder's peers).
func EncodeJSON(req *push.PushRequest) ([]byte, error) {
	type stream struct {
		Stream map[string]string `json:"stream"`
		Values [][]any           `json:"values"`
	}
	out := struct {
		Streams []stream `json:"streams"`
	}{}
	for _, s := range req.Streams {
		m, err := parseLabelString(s.Labels)
		if err != nil {
			return nil, err
		}
		st := stream{Stream: m}
		for _, e := range s.Entries {
			v := []any{strconv.FormatInt(e.Timestamp.UnixNano(), 10), e.Line}
			if len(e.StructuredMetadata) > 0 {
				md := map[string]string{}
				for _, l := range e.StructuredMetadata {
					md[l.Name] = l.Value
				}
				v = append(v, md)
			}
			st.Values = append(st.Values, v)
		}
		out.Streams = append(out.Streams, st)
	}
	return json.Marshal(out)
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	format := FormatProtobuf
	status, err := h.serve(r, &format)
	h.requests.WithLabelValues(format.String(), strconv.Itoa(status)).Inc()
	if err != nil {
		if status >= 500 {
			h.logger.Error("Loki push failed", "err", err)
		} else {
			h.logger.Debug("Loki push rejected", "status", status, "err", err)
		}
		if d := core.ErrorRetryAfter(err); d > 0 {
			w.Header().Set("Retry-After", core.RetryAfter(d))
		}
		// Messages are capped where they are made; this bounds their sum.
		http.Error(w, core.Truncate(err.Error(), 16<<10), status)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) serve(r *http.Request, format *Format) (int, error) {
	cluster, err := h.sig.Registry().Identify(fleet.CredentialFromHTTP(r))
	if err != nil {
		return http.StatusUnauthorized, err
	}
	// A cluster at its in-flight or log rate limit is refused before its
	// body is read or decoded.
	if err := h.sig.Limiter().Admit(cluster, core.BudgetLogBytes); err != nil {
		return Status(err), err
	}
	defer h.sig.Limiter().Done(cluster)
	f, err := FormatOf(r.Header.Get("Content-Type"))
	if err != nil {
		return Status(err), err
	}
	*format = f
	buf, err := core.ReadBody(r, nil, core.BodyLimits{MaxBytes: h.cfg.MaxRequestBytes, Key: "loki_push.max_request_bytes",
		Gzip: true, MaxDecodedBytes: h.cfg.MaxDecodedBytes})
	if err != nil {
		return Status(err), err
	}
	req, err := Decode(buf, f, h.cfg.MaxDecodedBytes)
	if err != nil {
		return Status(err), err
	}
	if err := h.sig.PushLogs(r.Context(), cluster, req.Streams); err != nil {
		return Status(err), err
	}
	return http.StatusNoContent, nil
}
