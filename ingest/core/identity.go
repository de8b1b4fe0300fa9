package core

import (
	"fmt"
	"net/http"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/fleetgate/fleetgate/fleet"
)

// Resolve is the cluster of data sent with the credential of cluster c:
// c itself, or in dev mode (c nil) the cluster the data claims; 401 when
// there is none.
func Resolve(reg *fleet.Registry, c *fleet.Cluster, claimed string) (*fleet.Cluster, *Error) {
	if c != nil {
		return c, nil
	}
	if c = reg.Dev(claimed); c == nil {
		return nil, &Error{Status: http.StatusUnauthorized, Reason: "unauthenticated", Msg: "no cluster identity"}
	}
	return c, nil
}

// Refused reports whether data of cluster c that claims cluster claimed
// (its cluster label or identity attribute; empty: no claim) is refused
// by identity.on_conflict: reject. With overwrite the stamp replaces the claim.
func Refused(reg *fleet.Registry, c *fleet.Cluster, claimed string) bool {
	return claimed != "" && claimed != c.Name && reg.OnConflict() == fleet.ConflictReject
}

// ConflictError is the 400 for data (what names it) that claims another
// cluster than the credential proves.
func ConflictError(what, claimed string, c *fleet.Cluster) *Error {
	return &Error{Status: http.StatusBadRequest, Reason: "conflict",
		Msg: fmt.Sprintf("%s claims cluster %.64q but the credential proves cluster %q", what, claimed, c.Name)}
}

// CheckIdentityValue applies identity.on_conflict to an identity value
// (key=value) carried inside data of cluster c, where the stamp does not
// reach (an OTLP scope, data point, record or span attribute, a log line's
// structured metadata): a value naming another cluster is refused (what
// says where, e.g. "span X has attribute"), or with overwrite, it must be overwritten with c's name
// (overwrite true).
func CheckIdentityValue(reg *fleet.Registry, c *fleet.Cluster, key, value string, what func() string) (overwrite bool, err *Error) {
	if value == c.Name {
		return false, nil
	}
	if reg.OnConflict() != fleet.ConflictOverwrite {
		return false, &Error{Status: http.StatusBadRequest, Reason: "conflict",
			Msg: fmt.Sprintf("%s %s=%.64q, another cluster than the credential proves (%q)", what(), key, value, c.Name)}
	}
	return true, nil
}

// CheckLabelLimits checks a label set (a series, kind "series", or a log
// stream, kind "stream") against c's limits: limits.max_labels_per_series,
// limits.max_label_name_length and limits.max_label_value_length.
func CheckLabelLimits(lim *fleet.Limits, kind string, ls labels.Labels) *Error {
	if lim.MaxLabelsPerSeries > 0 && ls.Len() > lim.MaxLabelsPerSeries {
		return &Error{Status: http.StatusBadRequest, Reason: "limit", Msg: fmt.Sprintf("%s %s has %d labels, more than limits.max_labels_per_series (%d)", kind, Abbrev(ls), ls.Len(), lim.MaxLabelsPerSeries)}
	}
	if lim.MaxLabelNameLength <= 0 && lim.MaxLabelValueLength <= 0 {
		return nil
	}
	var lerr *Error
	ls.Range(func(l labels.Label) {
		switch {
		case lerr != nil:
		case lim.MaxLabelNameLength > 0 && len(l.Name) > lim.MaxLabelNameLength:
			lerr = &Error{Status: http.StatusBadRequest, Reason: "limit", Msg: fmt.Sprintf("%s %s: label name %.64q… is %d bytes, longer than limits.max_label_name_length (%d)",
				kind, Abbrev(ls), l.Name, len(l.Name), lim.MaxLabelNameLength)}
		case lim.MaxLabelValueLength > 0 && len(l.Value) > lim.MaxLabelValueLength:
			lerr = &Error{Status: http.StatusBadRequest, Reason: "limit", Msg: fmt.Sprintf("%s %s: value of label %.64q is %d bytes, longer than limits.max_label_value_length (%d)",
				kind, Abbrev(ls), l.Name, len(l.Value), lim.MaxLabelValueLength)}
		}
	})
	return lerr
}

// Stamp returns ls with the sorted stamp labels of a cluster
// (fleet.Cluster.StampLabels) merged in, a stamped value replacing a sent
// one, built with sb (the result owns its memory; sb may be reused).
func Stamp(sb *labels.ScratchBuilder, ls labels.Labels, stamp [][2]string) labels.Labels {
	sb.Reset()
	i := 0
	ls.Range(func(l labels.Label) {
		for i < len(stamp) && stamp[i][0] < l.Name {
			sb.Add(stamp[i][0], stamp[i][1])
			i++
		}
		if i < len(stamp) && stamp[i][0] == l.Name {
			return // the stamped value replaces the sent one
		}
		sb.Add(l.Name, l.Value)
	})
	for ; i < len(stamp); i++ {
		sb.Add(stamp[i][0], stamp[i][1])
	}
	return sb.Labels()
}
