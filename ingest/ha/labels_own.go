//go:build !slicelabels && !dedupelabels

package ha

import "github.com/prometheus/prometheus/model/labels"

// ownLabels returns labels built by a labels.Builder or ScratchBuilder so
// they may be kept beyond the request: with stringlabels (the default) they
// already own their memory.
func ownLabels(ls labels.Labels) labels.Labels { return ls }
