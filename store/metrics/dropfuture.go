package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/tsdbutil"
)

// DropFutureReport is what DropFuture did.
type DropFutureReport struct {
	// PoisonedDir keeps the originals (never deleted): blocks/<ulid> and head/{wal,chunks_head,wbl}.
	PoisonedDir   string   `json:"poisonedDir,omitempty"`
	MovedBlocks   []string `json:"movedBlocks"`
	MovedHead     bool     `json:"movedHead"`
	WrittenBlocks []string `json:"writtenBlocks"`
	// KeptSamples were copied from the moved data into the new blocks;
	// DroppedSamples (at or after the cutoff) stay only in PoisonedDir.
	KeptSamples    int `json:"keptSamples"`
	DroppedSamples int `json:"droppedSamples"`
}

// headDirs are the parts of a TSDB directory that make up its head.
var headDirs = []string{"wal", "chunks_head", "wbl"}

// DropFuture repairs a poisoned TSDB in dir, which must not be open (it
// takes the TSDB's lock): the blocks and the head (WAL) that hold samples at
// or after before are moved to dir/poisoned-<time>/ (kept, not deleted), and
// their samples before it are written back as new blocks of blockDuration
// (aligned like the TSDB's own). The result accepts current samples again.
// Blocks that reach past now are rewritten the same way (their range, not
// their samples, would refuse current samples). A store without such data is
// left as it is.
func DropFuture(dir string, before time.Time, blockDuration time.Duration, logger *slog.Logger) (DropFutureReport, error) {
	rep := DropFutureReport{MovedBlocks: []string{}, WrittenBlocks: []string{}}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if blockDuration <= 0 {
		blockDuration = 2 * time.Hour
	}
	if _, err := os.Stat(dir); err != nil {
		return rep, fmt.Errorf("--storage.path: %w", err)
	}
	lock, err := tsdbutil.NewDirLocker(dir, "tsdb", logger, nil)
	if err != nil {
		return rep, err
	}
	if err := lock.Lock(); err != nil {
		return rep, fmt.Errorf("%s is in use (is fleetgate running? stop it first): %w", dir, err)
	}
	defer func() {
		if err := lock.Release(); err != nil {
			logger.Warn("releasing the TSDB lock", "err", err)
		}
	}()
	cutoff := before.UnixMilli()
	// A block reaching past now (the head compaction that a far-future
	// sample provokes writes whole block ranges early) makes the TSDB refuse
	// samples before its end as out of bounds: rewrite it too, with bounds
	// as tight as its samples.
	rewriteAfter := min(cutoff, time.Now().UnixMilli())

	metas, err := blockMetas(dir)
	if err != nil {
		return rep, err
	}
	var poisoned []blockMeta
	goodMax := int64(math.MinInt64)
	for _, m := range metas {
		if m.MaxTime > rewriteAfter { // MaxTime is exclusive: the block holds samples up to MaxTime-1
			poisoned = append(poisoned, m)
		} else {
			goodMax = max(goodMax, m.MaxTime)
		}
	}
	pdir := filepath.Join(dir, "poisoned-"+time.Now().UTC().Format("20060102T150405Z"))
	mkPoisoned := func() error {
		if rep.PoisonedDir != "" {
			return nil
		}
		if err := os.MkdirAll(filepath.Join(pdir, "blocks"), 0o755); err != nil {
			return fmt.Errorf("creating %s: %w", pdir, err)
		}
		rep.PoisonedDir = pdir
		return nil
	}
	// Blocks first: a far-future block would also make the head replay
	// below skip every older WAL sample.
	for _, m := range poisoned {
		if err := mkPoisoned(); err != nil {
			return rep, err
		}
		to := filepath.Join(pdir, "blocks", m.ULID.String())
		if err := os.Rename(m.dir, to); err != nil {
			return rep, fmt.Errorf("moving block %s aside: %w", m.ULID, err)
		}
		rep.MovedBlocks = append(rep.MovedBlocks, m.ULID.String())
		logger.Info("moved a block reaching past the cutoff or now aside", "block", m.ULID, "max_time", formatMs(m.MaxTime-1), "to", to)
	}

	headFuture, err := headHasFuture(dir, cutoff, logger)
	if err != nil {
		return rep, err
	}
	if headFuture {
		if err := mkPoisoned(); err != nil {
			return rep, err
		}
		if err := os.MkdirAll(filepath.Join(pdir, "head"), 0o755); err != nil {
			return rep, err
		}
		for _, d := range headDirs {
			if err := os.Rename(filepath.Join(dir, d), filepath.Join(pdir, "head", d)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return rep, fmt.Errorf("moving the head (%s) aside: %w", d, err)
			}
		}
		rep.MovedHead = true
		logger.Info("moved the head (WAL) with future samples aside", "to", filepath.Join(pdir, "head"))
	}
	if rep.PoisonedDir == "" {
		logger.Info("no sample at or after the cutoff: nothing to do", "cutoff", formatMs(cutoff))
		return rep, nil
	}

	// One merged view of everything moved aside, so that a series found in
	// several sources is copied once, in time order.
	var queriers []storage.Querier
	var blocks []*tsdb.Block
	var head *tsdb.DBReadOnly
	defer func() {
		for _, q := range queriers { // before the blocks: closing a block waits for its readers
			closeOrWarn(q, "a querier of the moved data", logger)
		}
		for _, b := range blocks {
			closeOrWarn(b, "a moved block", logger)
		}
		if head != nil {
			closeOrWarn(head, "the moved head", logger)
		}
	}()
	for _, m := range poisoned {
		b, err := tsdb.OpenBlock(logger, filepath.Join(pdir, "blocks", m.ULID.String()), chunkenc.NewPool(), nil)
		if err != nil {
			return rep, fmt.Errorf("opening moved block %s: %w", m.ULID, err)
		}
		blocks = append(blocks, b)
		q, err := tsdb.NewBlockQuerier(b, math.MinInt64, math.MaxInt64)
		if err != nil {
			return rep, err
		}
		queriers = append(queriers, q)
	}
	if headFuture {
		sandbox, err := os.MkdirTemp(dir, ".drop-future-")
		if err != nil {
			return rep, err
		}
		defer removeSandbox(sandbox, logger)
		if head, err = tsdb.OpenDBReadOnly(filepath.Join(pdir, "head"), sandbox, logger); err != nil {
			return rep, fmt.Errorf("reading the moved head: %w", err)
		}
		// Head samples before the newest kept block are in that block already.
		q, err := head.Querier(goodMax, math.MaxInt64)
		if err != nil {
			return rep, fmt.Errorf("reading the moved head: %w", err)
		}
		queriers = append(queriers, q)
	}
	w := &windowWriter{dir: dir, blockMs: blockDuration.Milliseconds(), logger: logger, writers: map[int64]*tsdb.BlockWriter{}}
	defer w.close()
	merged := storage.NewMergeQuerier(queriers, nil, storage.ChainedSeriesMerge)
	if err := w.copy(merged, math.MinInt64, cutoff, &rep); err != nil {
		return rep, fmt.Errorf("copying the moved data: %w", err)
	}
	ids, err := w.flush()
	rep.WrittenBlocks = append(rep.WrittenBlocks, ids...)
	if err != nil {
		return rep, err
	}
	logger.Info("future samples moved aside", "cutoff", formatMs(cutoff), "kept_samples", rep.KeptSamples,
		"dropped_samples", rep.DroppedSamples, "written_blocks", len(rep.WrittenBlocks), "originals", pdir)
	return rep, nil
}

// closeOrWarn closes c, opened read-only for drop-future: its close error
// changes no answer, so it is logged rather than returned.
func closeOrWarn(c io.Closer, what string, logger *slog.Logger) {
	if err := c.Close(); err != nil {
		logger.Warn("closing "+what, "err", err)
	}
}

// removeSandbox deletes the scratch directory of a read-only head replay; one
// left behind holds nothing fleetgate reads, but the operator should know.
func removeSandbox(dir string, logger *slog.Logger) {
	if err := os.RemoveAll(dir); err != nil {
		logger.Warn("removing drop-future's scratch directory", "dir", dir, "err", err)
	}
}

// headHasFuture replays the head of dir read-only and reports whether it
// holds a sample at or after cutoff.
func headHasFuture(dir string, cutoff int64, logger *slog.Logger) (bool, error) {
	if _, err := os.Stat(filepath.Join(dir, "wal")); errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	sandbox, err := os.MkdirTemp(dir, ".drop-future-")
	if err != nil {
		return false, err
	}
	defer removeSandbox(sandbox, logger)
	ro, err := tsdb.OpenDBReadOnly(dir, sandbox, logger)
	if err != nil {
		return false, fmt.Errorf("reading the head: %w", err)
	}
	defer closeOrWarn(ro, "the head", logger)
	q, err := ro.Querier(cutoff, math.MaxInt64)
	if err != nil {
		return false, fmt.Errorf("reading the head: %w", err)
	}
	defer closeOrWarn(q, "a querier of the head", logger)
	ss := q.Select(context.Background(), false, nil, labels.MustNewMatcher(labels.MatchRegexp, model.MetricNameLabel, ".*"))
	found := ss.Next()
	return found, ss.Err()
}

// windowWriter writes samples into one new block per aligned time window.
type windowWriter struct {
	dir     string
	blockMs int64
	logger  *slog.Logger
	writers map[int64]*tsdb.BlockWriter
	samples map[int64]int
}

func (w *windowWriter) appender(t int64, apps map[int64]storage.AppenderV2) (storage.AppenderV2, error) {
	win := t - t%w.blockMs
	if t < 0 && t%w.blockMs != 0 {
		win -= w.blockMs
	}
	if a := apps[win]; a != nil {
		return a, nil
	}
	bw := w.writers[win]
	if bw == nil {
		var err error
		if bw, err = tsdb.NewBlockWriter(w.logger, w.dir, w.blockMs); err != nil {
			return nil, err
		}
		w.writers[win] = bw
		if w.samples == nil {
			w.samples = map[int64]int{}
		}
	}
	w.samples[win]++
	a := bw.AppenderV2(context.Background())
	apps[win] = a
	return a, nil
}

// copy appends every sample of q in [from, cutoff) to the window writers and
// counts the samples at or after cutoff as dropped.
func (w *windowWriter) copy(q storage.Querier, from, cutoff int64, rep *DropFutureReport) error {
	ss := q.Select(context.Background(), false, nil, labels.MustNewMatcher(labels.MatchRegexp, model.MetricNameLabel, ".*"))
	var it chunkenc.Iterator
	for ss.Next() {
		s := ss.At()
		ls := s.Labels()
		apps := map[int64]storage.AppenderV2{}
		it = s.Iterator(it)
		last := int64(math.MinInt64)
		for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
			t := it.AtT()
			if t < from || (t <= last && last != math.MinInt64) {
				// A read-only head replay can yield a sample of an
				// m-mapped chunk again from the WAL: skip repeats.
				continue
			}
			last = t
			if t >= cutoff {
				rep.DroppedSamples++
				continue
			}
			a, err := w.appender(t, apps)
			if err != nil {
				return err
			}
			switch vt {
			case chunkenc.ValFloat:
				_, v := it.At()
				_, err = a.Append(0, ls, 0, t, v, nil, nil, storage.AOptions{})
			case chunkenc.ValHistogram:
				_, h := it.AtHistogram(nil)
				_, err = a.Append(0, ls, 0, t, 0, h, nil, storage.AOptions{})
			case chunkenc.ValFloatHistogram:
				_, fh := it.AtFloatHistogram(nil)
				_, err = a.Append(0, ls, 0, t, 0, nil, fh, storage.AOptions{})
			}
			if err != nil {
				return fmt.Errorf("series %s at %s: %w", ls, formatMs(t), err)
			}
			rep.KeptSamples++
		}
		if err := it.Err(); err != nil {
			return err
		}
		for _, a := range apps {
			if err := a.Commit(); err != nil {
				return err
			}
		}
	}
	return ss.Err()
}

// flush writes every window's block.
func (w *windowWriter) flush() ([]string, error) {
	var ids []string
	for win, bw := range w.writers {
		if w.samples[win] == 0 {
			continue
		}
		id, err := bw.Flush(context.Background())
		if err != nil {
			return ids, fmt.Errorf("writing the block of %s: %w", formatMs(win), err)
		}
		if id.Compare([16]byte{}) != 0 {
			ids = append(ids, id.String())
		}
	}
	return ids, nil
}

func (w *windowWriter) close() {
	for _, bw := range w.writers {
		if err := bw.Close(); err != nil {
			w.logger.Warn("closing a block writer", "err", err)
		}
	}
}
