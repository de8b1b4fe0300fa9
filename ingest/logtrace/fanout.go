package logtrace

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/grafana/loki/pkg/push"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/fleetgate/fleetgate/ingest/core"
	"github.com/fleetgate/fleetgate/store/seglog"
)

// MaxPushBytes bounds what one push may take encoded: the embedded stores and
// the forward queues keep a push as on-disk records of at most
// seglog.MaxRecordBytes, with room left for their framing and compression.
const MaxPushBytes = seglog.MaxRecordBytes / 8 * 7

// fanout writes one request to several sinks. When some sinks stored it and
// another failed, the client gets a retryable error and sends the same
// request again; fanout remembers which sinks already have that content
// (by a hash of it) so the retry goes only to the others, instead of storing
// it twice in the first ones. The memory is in-process and bounded.
type fanout struct {
	mu   sync.Mutex
	done map[uint64]partialPush
	fifo []uint64 // keys in insertion order, to bound done
	now  func() time.Time
}

type partialPush struct {
	stored []bool // by sink index
	at     time.Time
}

const (
	fanoutMemory = 4096          // requests remembered
	fanoutTTL    = 2 * time.Hour // longer than any sender keeps retrying one request
)

func newFanout() *fanout { return &fanout{done: map[uint64]partialPush{}, now: time.Now} }

// take returns (and forgets) which sinks stored the content key already.
func (f *fanout) take(key uint64, n int) []bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.done[key]
	if !ok || f.now().Sub(p.at) > fanoutTTL || len(p.stored) != n {
		return make([]bool, n)
	}
	delete(f.done, key)
	return p.stored
}

// put remembers that the sinks marked in stored have the content key.
func (f *fanout) put(key uint64, stored []bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for len(f.fifo) >= fanoutMemory {
		delete(f.done, f.fifo[0])
		f.fifo = f.fifo[1:]
	}
	if _, ok := f.done[key]; !ok {
		f.fifo = append(f.fifo, key)
	}
	f.done[key] = partialPush{stored: stored, at: f.now()}
}

// write calls push for every sink that does not have the content key yet.
// It returns the sinks' errors joined; nil when every sink has it.
func (f *fanout) write(n int, key func() uint64, push func(i int) error) error {
	if n == 0 {
		return nil
	}
	if n == 1 {
		return push(0) // nothing to remember: a failure stored nothing
	}
	k := key()
	stored := f.take(k, n)
	var errs []error
	some := false
	for i := range n {
		if stored[i] {
			some = true
			continue
		}
		if err := push(i); err != nil {
			errs = append(errs, err)
			continue
		}
		stored[i], some = true, true
	}
	if len(errs) > 0 && some {
		f.put(k, stored)
	}
	return errors.Join(errs...)
}

// logsKey hashes the (stamped) content of a push.
func logsKey(streams []push.Stream) uint64 {
	h := xxhash.New()
	var b [8]byte
	str := func(s string) {
		binary.LittleEndian.PutUint64(b[:], uint64(len(s)))
		_, _ = h.Write(b[:])
		_, _ = h.WriteString(s)
	}
	for i := range streams {
		str(streams[i].Labels)
		binary.LittleEndian.PutUint64(b[:], uint64(len(streams[i].Entries)))
		_, _ = h.Write(b[:])
		for j := range streams[i].Entries {
			e := &streams[i].Entries[j]
			binary.LittleEndian.PutUint64(b[:], uint64(e.Timestamp.UnixNano()))
			_, _ = h.Write(b[:])
			str(e.Line)
			binary.LittleEndian.PutUint64(b[:], uint64(len(e.StructuredMetadata)))
			_, _ = h.Write(b[:])
			for _, l := range e.StructuredMetadata {
				str(l.Name)
				str(l.Value)
			}
		}
	}
	return h.Sum64()
}

// tracesKey hashes the (stamped) content of an export.
func tracesKey(td ptrace.Traces) uint64 {
	var m ptrace.ProtoMarshaler
	b, err := m.MarshalTraces(td)
	if err != nil {
		return 0 // cannot happen for a valid pdata value; 0 then only matches another such export
	}
	return xxhash.Sum64(b)
}

// pushTooLarge refuses a push that no on-disk record could hold, before any
// sink stores any of it.
func pushTooLarge(what string, size int) *core.Error {
	if size <= MaxPushBytes {
		return nil
	}
	return &core.Error{Status: http.StatusRequestEntityTooLarge, Reason: "too_large",
		Msg: fmt.Sprintf("the %s of this request take %d bytes encoded, more than the %d bytes one push may take in fleetgate's stores and forward queues; send smaller pushes", what, size, MaxPushBytes)}
}

// logsSize is the encoded size of the streams of a push.
func logsSize(streams []push.Stream) int {
	n := 0
	for i := range streams {
		n += streams[i].Size() + 16
	}
	return n
}
