// Package durable writes files so that what a call wrote survives a crash
// once it returns. It is the one place fleetgate does "temporary file,
// fsync, rename, directory fsync"; the rename and directory fsync are
// Prometheus's tsdb/fileutil.
package durable

import (
	"errors"
	"os"
	"path/filepath"

	"github.com/prometheus/prometheus/tsdb/fileutil"
)

// TmpSuffix is appended to a file's name for the temporary file WriteFile
// writes first; one left behind by a crash holds nothing that was promised.
const TmpSuffix = ".tmp"

// WriteFile replaces path with b: b is written to path+TmpSuffix, fsynced,
// renamed over path and the directory is fsynced. When it returns nil, path
// holds b durably. On error before the rename path keeps its old content and
// the temporary file is removed; if only the directory fsync failed, path
// may hold b but it is not known to be durable.
func WriteFile(path string, b []byte, perm os.FileMode) error {
	tmp := path + TmpSuffix
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fileutil.Rename(tmp, path) // fsyncs the directory too
	}
	if err != nil {
		if rerr := os.Remove(tmp); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = errors.Join(err, rerr)
		}
		return err
	}
	return nil
}

// SyncDir fsyncs a directory, making the creation, rename and removal of
// files in it durable.
func SyncDir(dir string) error {
	d, err := fileutil.OpenDir(filepath.Clean(dir))
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
