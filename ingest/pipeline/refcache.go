package pipeline

import (
	"encoding/binary"
	"hash/maphash"
	"strings"
	"sync"

	"github.com/prometheus/prometheus/storage"
)

// refCache remembers, for a series as a cluster sent it, the storage
// reference of the stamped series it was appended as. A known series then
// skips building its labels, validation, stamping, label hashing and the TSDB
// index lookup by hash.
//
// The key is a 128-bit hash (two seeded maphashes) of the cluster's stamp
// and the series identity as sent; only series that passed validation are
// cached, so a hit proves the labels valid and stamped before. A reference can
// go stale when the head garbage-collects the series; the appender then sees
// an unknown reference with empty labels and fails, and Add falls back to the
// full path, which re-caches the new reference.
//
// It is a sharded open-addressing table, not fastcache: with 1M series a
// fastcache lookup (a Go map, then the chunk, under a lock with an atomic
// counter) took half of the ingest CPU; a sharded Go map made remote-write
// 2.0 ingest 27% cheaper per sample, and this table, which mostly touches one
// cache line per lookup, cheaper again (bench/README.md). It holds no
// pointers, so the GC does not scan it. A full shard is cleared; its series
// take the full path once.
type refCache struct {
	shards       [256]refShard
	maxPerShard  int // entries; a power of two
	seedA, seedB maphash.Seed
}

// refShard is an open-addressing table with linear probing: a lookup mostly
// touches one cache line, where a Go map touches its control word and then
// the slot. An entry with ref 0 is empty (storage never hands out 0).
type refShard struct {
	mu      sync.RWMutex
	entries []refEntry
	n       int
	_       [24]byte // keep shards on their own cache lines
}

type refEntry struct {
	k   refKey
	ref storage.SeriesRef
}

// refEntryBytes is what one entry costs at the highest load factor.
const refEntryBytes = 48

func newRefCache(maxBytes int) *refCache {
	if maxBytes <= 0 {
		return nil
	}
	per := 64
	for per*2*refEntryBytes*len(refCache{}.shards) <= maxBytes {
		per *= 2
	}
	rc := &refCache{maxPerShard: per, seedA: maphash.MakeSeed(), seedB: maphash.MakeSeed()}
	for i := range rc.shards {
		rc.shards[i].entries = make([]refEntry, 64)
	}
	return rc
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

// home is where k's probe sequence starts in a table of mask+1 entries.
// The key is a hash already; its first byte picks the shard.
func home(k *refKey, mask int) int { return int(binary.LittleEndian.Uint64(k[8:])) & mask }

func (rc *refCache) get(k *refKey) storage.SeriesRef {
	sh := &rc.shards[k[0]]
	sh.mu.RLock()
	mask := len(sh.entries) - 1
	var ref storage.SeriesRef
	for i := home(k, mask); ; i = (i + 1) & mask {
		e := &sh.entries[i]
		if e.ref == 0 {
			break
		}
		if e.k == *k {
			ref = e.ref
			break
		}
	}
	sh.mu.RUnlock()
	return ref
}

func (rc *refCache) set(k *refKey, ref storage.SeriesRef) {
	if ref == 0 {
		return
	}
	sh := &rc.shards[k[0]]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if (sh.n+1)*4 > len(sh.entries)*3 {
		if len(sh.entries) >= rc.maxPerShard {
			clear(sh.entries) // full: start over; forgotten series take the full path once
			sh.n = 0
		} else {
			old := sh.entries
			sh.entries, sh.n = make([]refEntry, 2*len(old)), 0
			for i := range old {
				if old[i].ref != 0 {
					sh.insert(&old[i].k, old[i].ref)
				}
			}
		}
	}
	sh.insert(k, ref)
}

func (sh *refShard) insert(k *refKey, ref storage.SeriesRef) {
	mask := len(sh.entries) - 1
	for i := home(k, mask); ; i = (i + 1) & mask {
		e := &sh.entries[i]
		if e.ref == 0 {
			e.k, e.ref = *k, ref
			sh.n++
			return
		}
		if e.k == *k {
			e.ref = ref
			return
		}
	}
}

// del removes k, shifting later entries of the probe run back so that no
// lookup stops early at the hole.
func (rc *refCache) del(k *refKey) {
	sh := &rc.shards[k[0]]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	mask := len(sh.entries) - 1
	i := home(k, mask)
	for {
		e := &sh.entries[i]
		if e.ref == 0 {
			return // not there
		}
		if e.k == *k {
			break
		}
		i = (i + 1) & mask
	}
	sh.entries[i] = refEntry{}
	sh.n--
	for j := (i + 1) & mask; sh.entries[j].ref != 0; j = (j + 1) & mask {
		h := home(&sh.entries[j].k, mask)
		// Move entry j into the hole at i unless its home lies cyclically in (i, j].
		if (j > i && (h <= i || h > j)) || (j < i && h <= i && h > j) {
			sh.entries[i] = sh.entries[j]
			sh.entries[j] = refEntry{}
			i = j
		}
	}
}

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
