package core

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/prometheus/prometheus/model/labels"
)

// Bounds of error bodies: a request with many bad series (or one with
// thousands of labels) gets a short answer, not a copy of itself.
const (
	// MaxProblems is how many problems an error lists; the rest are counted.
	MaxProblems = 10
	// MaxProblemBytes bounds one problem's message.
	MaxProblemBytes = 512
	// maxLabelsBytes bounds a label set quoted in a message.
	maxLabelsBytes = 256
)

// Problems keeps the first MaxProblems errors of a request, each cut to
// MaxProblemBytes, and counts the rest. The zero value is ready to use.
type Problems struct {
	first []string
	n     int
}

// Add records one problem.
func (p *Problems) Add(err error) {
	p.n++
	if len(p.first) < MaxProblems {
		p.first = append(p.first, Truncate(err.Error(), MaxProblemBytes))
	}
}

// Len is how many problems were added.
func (p *Problems) Len() int { return p.n }

// Err is nil without problems, else one error listing the first ones and
// saying how many more there were.
func (p *Problems) Err() error {
	if p.n == 0 {
		return nil
	}
	msg := strings.Join(p.first, "; ")
	if more := p.n - len(p.first); more > 0 {
		msg += fmt.Sprintf("; and %d more", more)
	}
	return errors.New(msg)
}

// Truncate cuts s to at most n bytes on a UTF-8 boundary, marking the cut.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "…"
	cut := max(n-len(mark), 0)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}

// Abbrev formats ls as labels.Labels.String does, cut to about 256 bytes:
// a series with thousands of labels is named by its first ones and a count.
func Abbrev(ls labels.Labels) string {
	var sb strings.Builder
	sb.WriteByte('{')
	i, n := 0, ls.Len()
	full := false
	ls.Range(func(l labels.Label) {
		if full {
			return
		}
		if i > 0 {
			sb.WriteString(", ")
		}
		if sb.Len() > maxLabelsBytes {
			fmt.Fprintf(&sb, "… %d more labels", n-i)
			full = true
			return
		}
		sb.WriteString(Truncate(l.Name, 64))
		sb.WriteByte('=')
		sb.WriteString(strconv.Quote(Truncate(l.Value, 128)))
		i++
	})
	sb.WriteByte('}')
	return sb.String()
}
