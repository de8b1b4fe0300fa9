//go:build slicelabels || dedupelabels

package ha

import "github.com/prometheus/prometheus/model/labels"

// ownLabels copies labels whose strings may point into a request's buffers
// so they may be kept beyond the request.
func ownLabels(ls labels.Labels) labels.Labels { return ls.Copy() }
