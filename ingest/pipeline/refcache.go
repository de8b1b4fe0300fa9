package pipeline

import (
	"encoding/binary"
	"hash/maphash"
	"strings"

	"github.com/VictoriaMetrics/fastcache"
	"github.com/prometheus/prometheus/storage"
)

// refCache remembers, for a series as a cluster sent it, the storage
// reference of the stamped series it was appended as. A known series then
// skips validation, stamping, label hashing and the TSDB index lookup.
//
// The key is a 128-bit hash (two seeded maphashes) of the cluster's stamp
// and the labels as sent; only series that passed validation are cached, so
// a hit proves the labels valid and stamped before. A reference can go stale
// when the head garbage-collects the series; the appender then sees an
// unknown reference with empty labels and fails, and Add falls back to the
// full path, which re-caches the new reference.
type refCache struct {
	c            *fastcache.Cache
	seedA, seedB maphash.Seed
}

func newRefCache(maxBytes int) *refCache {
	if maxBytes <= 0 {
		return nil
	}
	return &refCache{c: fastcache.New(maxBytes), seedA: maphash.MakeSeed(), seedB: maphash.MakeSeed()}
}

type refKey [16]byte

// key hashes the cluster stamp and the series identity as sent.
func (rc *refCache) key(stampKey string, id []byte) refKey {
	var k refKey
	var h maphash.Hash
	h.SetSeed(rc.seedA)
	h.WriteString(stampKey)
	h.Write(id)
	binary.LittleEndian.PutUint64(k[:8], h.Sum64())
	h.SetSeed(rc.seedB)
	h.WriteString(stampKey)
	h.Write(id)
	binary.LittleEndian.PutUint64(k[8:], h.Sum64())
	return k
}

func (rc *refCache) get(k *refKey) storage.SeriesRef {
	var v [8]byte
	out, ok := rc.c.HasGet(v[:0], k[:])
	if !ok || len(out) != 8 {
		return 0
	}
	return storage.SeriesRef(binary.LittleEndian.Uint64(out))
}

func (rc *refCache) set(k *refKey, ref storage.SeriesRef) {
	var v [8]byte
	binary.LittleEndian.PutUint64(v[:], uint64(ref))
	rc.c.Set(k[:], v[:])
}

func (rc *refCache) del(k *refKey) { rc.c.Del(k[:]) }

// stampKey identifies what stamping does for a cluster: its sorted stamp
// labels, the cluster name included. In dev mode without a cluster the
// cluster comes from the series' own labels, which are part of the key anyway.
func stampKey(stamps [][2]string, fromData bool) string {
	if fromData {
		return "\xff"
	}
	var sb strings.Builder
	for _, l := range stamps {
		sb.WriteString(l[0])
		sb.WriteByte(0xfe)
		sb.WriteString(l[1])
		sb.WriteByte(0xff)
	}
	return sb.String()
}
