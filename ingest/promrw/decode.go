package promrw

import (
	"errors"
	"fmt"
	"io"
	"unsafe"

	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
)

// The decoders below fill pooled prompb.WriteRequest / writev2.Request values
// in place. Unlike the generated gogo Unmarshal they keep the inner slices
// (labels, samples, label references) of every reused series and do not copy
// strings: label names, values and symbols point into the decoded body, which
// the handler keeps alive until the request is answered. Nothing may retain
// them: labels are copied when stamped, metadata by the metadata sink.
// Sub-messages that do not allocate (samples, v2 metadata) and rare ones
// (histograms, exemplars, v1 metadata) are decoded by the generated code.
// The wire semantics (errors, last-wins, unknown fields skipped) follow the
// generated decoder; FuzzDecodeV1/V2 check them against it.

var (
	errIntOverflow     = errors.New("proto: integer overflow")
	errInvalidLength   = errors.New("proto: negative length found during unmarshaling")
	errUnexpectedGroup = errors.New("proto: unexpected end of group")
)

func yoloString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// varint reads a varint at b[i:], returning the value and the next index.
func varint(b []byte, i int) (uint64, int, error) {
	var v uint64
	for shift := uint(0); ; shift += 7 {
		if shift >= 64 {
			return 0, i, errIntOverflow
		}
		if i >= len(b) {
			return 0, i, io.ErrUnexpectedEOF
		}
		c := b[i]
		i++
		v |= uint64(c&0x7F) << shift
		if c < 0x80 {
			return v, i, nil
		}
	}
}

// tag reads a field tag and rejects what the generated decoder rejects.
func tag(b []byte, i int, msg string) (field int32, wire int, next int, err error) {
	v, next, err := varint(b, i)
	if err != nil {
		return 0, 0, next, err
	}
	field, wire = int32(v>>3), int(v&7)
	if wire == 4 {
		return 0, 0, next, fmt.Errorf("proto: %s: wiretype end group for non-group", msg)
	}
	if field <= 0 {
		return 0, 0, next, fmt.Errorf("proto: %s: illegal tag %d (wire type %d)", msg, field, v)
	}
	return field, wire, next, nil
}

// lengthDelimited reads a length and returns the bounds of the payload.
func lengthDelimited(b []byte, i int) (start, end int, err error) {
	n, i, err := varint(b, i)
	if err != nil {
		return 0, 0, err
	}
	ln := int(n)
	if ln < 0 {
		return 0, 0, errInvalidLength
	}
	end = i + ln
	if end < 0 {
		return 0, 0, errInvalidLength
	}
	if end > len(b) {
		return 0, 0, io.ErrUnexpectedEOF
	}
	return i, end, nil
}

// skipField skips an unknown field starting at its tag at b[i:], as the
// generated skip functions do (groups included).
func skipField(b []byte, i int) (int, error) {
	l := len(b)
	depth := 0
	for i < l {
		wire, next, err := varint(b, i)
		if err != nil {
			return 0, err
		}
		i = next
		switch wire & 7 {
		case 0:
			if _, i, err = varint(b, i); err != nil {
				return 0, err
			}
		case 1:
			i += 8
		case 2:
			var n uint64
			if n, i, err = varint(b, i); err != nil {
				return 0, err
			}
			if int(n) < 0 {
				return 0, errInvalidLength
			}
			i += int(n)
		case 3:
			depth++
		case 4:
			if depth == 0 {
				return 0, errUnexpectedGroup
			}
			depth--
		case 5:
			i += 4
		default:
			return 0, fmt.Errorf("proto: illegal wireType %d", wire&7)
		}
		if i < 0 {
			return 0, errInvalidLength
		}
		if depth == 0 {
			if i > l {
				return 0, io.ErrUnexpectedEOF
			}
			return i, nil
		}
	}
	return 0, io.ErrUnexpectedEOF
}

func wrongWire(wire int, field string) error {
	return fmt.Errorf("proto: wrong wireType = %d for field %s", wire, field)
}

// decodeV1 fills req (whose slices it reuses) from a remote-write 1.0 body.
// If ids is not nil, (*ids)[i] is set to the encoded labels of series i when
// they are contiguous in the body (they are, as every sender writes them),
// or nil.
func decodeV1(req *prompb.WriteRequest, ids *[][]byte, b []byte) error {
	if ids != nil {
		*ids = (*ids)[:0]
	}
	req.Timeseries = req.Timeseries[:0]
	req.Metadata = req.Metadata[:0]
	for i := 0; i < len(b); {
		field, wire, next, err := tag(b, i, "WriteRequest")
		if err != nil {
			return err
		}
		switch field {
		case 1, 3:
			if wire != 2 {
				if field == 1 {
					return wrongWire(wire, "Timeseries")
				}
				return wrongWire(wire, "Metadata")
			}
			start, end, err := lengthDelimited(b, next)
			if err != nil {
				return err
			}
			if field == 1 {
				if len(req.Timeseries) < cap(req.Timeseries) {
					req.Timeseries = req.Timeseries[:len(req.Timeseries)+1]
				} else {
					req.Timeseries = append(req.Timeseries, prompb.TimeSeries{})
				}
				id, err := decodeSeriesV1(&req.Timeseries[len(req.Timeseries)-1], b[start:end])
				if err != nil {
					return err
				}
				if ids != nil {
					*ids = append(*ids, id)
				}
			} else {
				req.Metadata = append(req.Metadata, prompb.MetricMetadata{})
				if err := req.Metadata[len(req.Metadata)-1].Unmarshal(b[start:end]); err != nil {
					return err
				}
			}
			i = end
		default:
			if i, err = skipField(b, i); err != nil {
				return err
			}
		}
	}
	return nil
}

// decodeSeriesV1 decodes one series and returns its encoded label fields, if
// contiguous.
func decodeSeriesV1(ts *prompb.TimeSeries, b []byte) ([]byte, error) {
	labStart, labEnd, contiguous := -1, -1, true
	ts.Labels = ts.Labels[:0]
	ts.Samples = ts.Samples[:0]
	ts.Exemplars = ts.Exemplars[:0]
	ts.Histograms = ts.Histograms[:0]
	ts.XXX_unrecognized = nil
	for i := 0; i < len(b); {
		field, wire, next, err := tag(b, i, "TimeSeries")
		if err != nil {
			return nil, err
		}
		if field < 1 || field > 4 {
			if i, err = skipField(b, i); err != nil {
				return nil, err
			}
			continue
		}
		if wire != 2 {
			return nil, wrongWire(wire, [...]string{"", "Labels", "Samples", "Exemplars", "Histograms"}[field])
		}
		start, end, err := lengthDelimited(b, next)
		if err != nil {
			return nil, err
		}
		sub := b[start:end]
		switch field {
		case 1:
			if labStart < 0 {
				labStart = i
			} else if labEnd != i {
				contiguous = false
			}
			labEnd = end
			ts.Labels = append(ts.Labels, prompb.Label{})
			if err := decodeLabel(&ts.Labels[len(ts.Labels)-1], sub); err != nil {
				return nil, err
			}
		case 2:
			ts.Samples = append(ts.Samples, prompb.Sample{})
			if err := ts.Samples[len(ts.Samples)-1].Unmarshal(sub); err != nil {
				return nil, err
			}
		case 3:
			ts.Exemplars = append(ts.Exemplars, prompb.Exemplar{})
			if err := ts.Exemplars[len(ts.Exemplars)-1].Unmarshal(sub); err != nil {
				return nil, err
			}
		case 4:
			ts.Histograms = append(ts.Histograms, prompb.Histogram{})
			if err := ts.Histograms[len(ts.Histograms)-1].Unmarshal(sub); err != nil {
				return nil, err
			}
		}
		i = end
	}
	if labStart < 0 || !contiguous {
		return nil, nil
	}
	return b[labStart:labEnd], nil
}

func decodeLabel(l *prompb.Label, b []byte) error {
	for i := 0; i < len(b); {
		field, wire, next, err := tag(b, i, "Label")
		if err != nil {
			return err
		}
		switch field {
		case 1, 2:
			if wire != 2 {
				return wrongWire(wire, [...]string{"", "Name", "Value"}[field])
			}
			start, end, err := lengthDelimited(b, next)
			if err != nil {
				return err
			}
			if field == 1 {
				l.Name = yoloString(b[start:end])
			} else {
				l.Value = yoloString(b[start:end])
			}
			i = end
		default:
			if i, err = skipField(b, i); err != nil {
				return err
			}
		}
	}
	return nil
}

// decodeV2 fills req (whose slices it reuses) from a remote-write 2.0 body.
func decodeV2(req *writev2.Request, b []byte) error {
	req.Symbols = req.Symbols[:0]
	req.Timeseries = req.Timeseries[:0]
	for i := 0; i < len(b); {
		field, wire, next, err := tag(b, i, "Request")
		if err != nil {
			return err
		}
		switch field {
		case 4, 5:
			if wire != 2 {
				if field == 4 {
					return wrongWire(wire, "Symbols")
				}
				return wrongWire(wire, "Timeseries")
			}
			start, end, err := lengthDelimited(b, next)
			if err != nil {
				return err
			}
			if field == 4 {
				req.Symbols = append(req.Symbols, yoloString(b[start:end]))
			} else {
				if len(req.Timeseries) < cap(req.Timeseries) {
					req.Timeseries = req.Timeseries[:len(req.Timeseries)+1]
				} else {
					req.Timeseries = append(req.Timeseries, writev2.TimeSeries{})
				}
				if err := decodeSeriesV2(&req.Timeseries[len(req.Timeseries)-1], b[start:end]); err != nil {
					return err
				}
			}
			i = end
		default:
			if i, err = skipField(b, i); err != nil {
				return err
			}
		}
	}
	return nil
}

func decodeSeriesV2(ts *writev2.TimeSeries, b []byte) error {
	ts.LabelsRefs = ts.LabelsRefs[:0]
	ts.Samples = ts.Samples[:0]
	ts.Histograms = ts.Histograms[:0]
	ts.Exemplars = ts.Exemplars[:0]
	ts.Metadata = writev2.Metadata{}
	for i := 0; i < len(b); {
		field, wire, next, err := tag(b, i, "TimeSeries")
		if err != nil {
			return err
		}
		if field < 1 || field > 5 {
			if i, err = skipField(b, i); err != nil {
				return err
			}
			continue
		}
		if field == 1 && wire == 0 {
			v, end, err := varint(b, next)
			if err != nil {
				return err
			}
			ts.LabelsRefs = append(ts.LabelsRefs, uint32(v))
			i = end
			continue
		}
		if wire != 2 {
			return wrongWire(wire, [...]string{"", "LabelsRefs", "Samples", "Histograms", "Exemplars", "Metadata"}[field])
		}
		start, end, err := lengthDelimited(b, next)
		if err != nil {
			return err
		}
		sub := b[start:end]
		switch field {
		case 1:
			// Packed refs. Like the generated code, a varint may run past
			// the packed length; decoding then continues where it ended.
			j := start
			for j < end {
				v, nj, err := varint(b, j)
				if err != nil {
					return err
				}
				ts.LabelsRefs = append(ts.LabelsRefs, uint32(v))
				j = nj
			}
			end = j
		case 2:
			ts.Samples = append(ts.Samples, writev2.Sample{})
			if err := ts.Samples[len(ts.Samples)-1].Unmarshal(sub); err != nil {
				return err
			}
		case 3:
			ts.Histograms = append(ts.Histograms, writev2.Histogram{})
			if err := ts.Histograms[len(ts.Histograms)-1].Unmarshal(sub); err != nil {
				return err
			}
		case 4:
			ts.Exemplars = append(ts.Exemplars, writev2.Exemplar{})
			if err := ts.Exemplars[len(ts.Exemplars)-1].Unmarshal(sub); err != nil {
				return err
			}
		case 5:
			if err := ts.Metadata.Unmarshal(sub); err != nil {
				return err
			}
		}
		i = end
	}
	return nil
}
