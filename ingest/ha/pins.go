package ha

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"

	"github.com/fleetgate/fleetgate/internal/durable"
)

// ErrPinNotSaved wraps a pin that could not be written durably: it did not
// take effect (answer 503, the operator retries).
var ErrPinNotSaved = errors.New("HA pin not saved")

type pinRecord struct {
	Cluster string `json:"cluster"`
	Group   string `json:"group,omitempty"`
	Replica string `json:"replica"`
}

// OpenPins makes pins durable in path (under --storage.path): every pin and
// unpin is written there (temporary file, fsync, rename, directory fsync)
// before it takes effect, and the pins in it are restored now, over what
// Load restored (the pin file is newer: it is written on every change, the
// state file only at shutdown).
func (t *Tracker) OpenPins(path string) error {
	if t == nil {
		return nil
	}
	t.pinMu.Lock()
	defer t.pinMu.Unlock()
	t.pinPath = path
	t.pins = map[haKey]string{}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		// No pin was ever saved: the pins restored by Load are the state.
		t.mu.RLock()
		for k, g := range t.groups {
			if g.pinned {
				t.pins[k] = g.elected
			}
		}
		t.mu.RUnlock()
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading HA pins: %w", err)
	}
	var recs []pinRecord
	if err := json.Unmarshal(b, &recs); err != nil {
		return fmt.Errorf("decoding HA pins %s: %w", path, err)
	}
	for _, r := range recs {
		t.pins[haKey{cluster: r.Cluster, group: r.Group}] = r.Replica
	}
	now := t.now()
	t.mu.RLock()
	var unpin []haKey
	for k, g := range t.groups {
		if _, ok := t.pins[k]; g.pinned && !ok {
			unpin = append(unpin, k)
		}
	}
	t.mu.RUnlock()
	for _, k := range unpin {
		t.applyPin(k, "", now)
	}
	for k, r := range t.pins {
		t.applyPin(k, r, now)
	}
	return nil
}

// savePinLocked writes the pins with key's change; t.pinMu is held.
func (t *Tracker) savePinLocked(key haKey, replica string) error {
	if t.pinPath == "" {
		return nil
	}
	next := make(map[haKey]string, len(t.pins)+1)
	for k, r := range t.pins {
		next[k] = r
	}
	if replica == "" {
		delete(next, key)
	} else {
		next[key] = replica
	}
	recs := make([]pinRecord, 0, len(next))
	for k, r := range next {
		recs = append(recs, pinRecord{Cluster: k.cluster, Group: k.group, Replica: r})
	}
	sort.Slice(recs, func(i, j int) bool {
		if recs[i].Cluster != recs[j].Cluster {
			return recs[i].Cluster < recs[j].Cluster
		}
		return recs[i].Group < recs[j].Group
	})
	b, err := json.Marshal(recs)
	if err != nil {
		return fmt.Errorf("%w: encoding: %w", ErrPinNotSaved, err)
	}
	if err := durable.WriteFile(t.pinPath, b, 0o644); err != nil {
		return fmt.Errorf("%w: %w", ErrPinNotSaved, err)
	}
	t.pins = next
	return nil
}
