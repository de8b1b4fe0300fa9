package query

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
)

// writeJSON writes v as the response body.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Success is Prometheus's JSON success envelope, status first.
type Success struct {
	Status   string   `json:"status"`
	Data     any      `json:"data"`
	Warnings []string `json:"warnings,omitempty"`
}

// WriteSuccess writes data in the success envelope.
func WriteSuccess(w http.ResponseWriter, data any) {
	writeJSON(w, http.StatusOK, Success{Status: "success", Data: data})
}

// WriteError writes Prometheus's JSON error shape with the given status.
func WriteError(w http.ResponseWriter, status int, errType, msg string) {
	writeError(w, status, errType, msg)
}

// writeError writes Prometheus's JSON error shape.
func writeError(w http.ResponseWriter, status int, errType, msg string) {
	writeJSON(w, status, struct {
		Status    string `json:"status"`
		ErrorType string `json:"errorType"`
		Error     string `json:"error"`
	}{"error", errType, msg})
}

// noTSDB answers the TSDB status endpoints when there is no embedded TSDB.
type noTSDB struct{}

var errNoTSDB = errors.New("no embedded TSDB: fleetgate runs in forward-only mode")

func (noTSDB) CleanTombstones() error { return errNoTSDB }
func (noTSDB) Delete(context.Context, int64, int64, ...*labels.Matcher) error {
	return errNoTSDB
}
func (noTSDB) Snapshot(string, bool) error                    { return errNoTSDB }
func (noTSDB) Stats(string, int) (*tsdb.Stats, error)         { return nil, errNoTSDB }
func (noTSDB) WALReplayStatus() (tsdb.WALReplayStatus, error) { return tsdb.WALReplayStatus{}, nil }
func (noTSDB) BlockMetas() ([]tsdb.BlockMeta, error)          { return nil, errNoTSDB }

type noExemplars struct{}

func (noExemplars) ExemplarQuerier(context.Context) (storage.ExemplarQuerier, error) {
	return noExemplars{}, nil
}
func (noExemplars) Select(int64, int64, ...[]*labels.Matcher) ([]exemplar.QueryResult, error) {
	return []exemplar.QueryResult{}, nil
}
