package core

import (
	"compress/gzip"
	"errors"
	"io"
	"net/http"
)

// BodyLimits bound a request body for ReadBody.
type BodyLimits struct {
	// MaxBytes bounds the body as sent (compressed); Key is its YAML key,
	// named in the 413 answer (e.g. "otlp.max_request_bytes").
	MaxBytes int
	Key      string
	// Gzip: the body may be gzip-encoded (Content-Encoding: gzip or
	// identity, else 415); MaxDecodedBytes then bounds the gunzipped body.
	// Without Gzip the body is read as sent: the caller checked
	// Content-Encoding (remote-write's snappy is decoded by the caller).
	Gzip            bool
	MaxDecodedBytes int
}

// ReadBody reads r's body into buf (reusing its capacity) within l: 413
// when Content-Length or the body read through http.MaxBytesReader is more
// than l.MaxBytes, or the gunzipped body more than l.MaxDecodedBytes; 415
// for an encoding it cannot read; 400 for a body that fails to arrive or
// decode. A body that is trickled is cut off by the read deadline the
// listener sets (cmd/fleetgate's bodyDeadline), and its read error is a 400.
// Every error is an *Error.
func ReadBody(r *http.Request, buf []byte, l BodyLimits) ([]byte, error) {
	if r.ContentLength > int64(l.MaxBytes) {
		return buf, Errorf(http.StatusRequestEntityTooLarge, "too_large", "request body is %d bytes, more than %s (%d)", r.ContentLength, l.Key, l.MaxBytes)
	}
	var body io.Reader = http.MaxBytesReader(nil, r.Body, int64(l.MaxBytes))
	limit := l.MaxBytes
	if l.Gzip {
		switch ce := r.Header.Get("Content-Encoding"); ce {
		case "", "identity":
		case "gzip":
			zr, err := gzip.NewReader(body)
			if err != nil {
				return buf, Errorf(http.StatusBadRequest, "invalid", "decoding gzip body: %w", err)
			}
			defer zr.Close()
			body, limit = zr, l.MaxDecodedBytes
		default:
			return buf, Errorf(http.StatusUnsupportedMediaType, "invalid", "unsupported Content-Encoding %q: want gzip or none", ce)
		}
	}
	if cap(buf) == 0 && r.ContentLength > 0 {
		// One allocation for a body of known length (and room to see EOF).
		buf = make([]byte, 0, r.ContentLength+1)
	}
	buf, err := readAll(body, buf[:0], limit)
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return buf, Errorf(http.StatusRequestEntityTooLarge, "too_large", "request body is more than %s (%d)", l.Key, l.MaxBytes)
	case err != nil:
		return buf, Errorf(http.StatusBadRequest, "invalid", "reading request body: %w", err)
	case len(buf) > limit:
		return buf, Errorf(http.StatusRequestEntityTooLarge, "too_large", "decoded request body is more than %d bytes", limit)
	}
	return buf, nil
}

// readAll appends rd to buf until EOF or until it holds more than limit bytes.
func readAll(rd io.Reader, buf []byte, limit int) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := rd.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if len(buf) > limit {
			return buf, nil
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}
