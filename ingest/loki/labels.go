package loki

import (
	"sort"
	"strconv"
	"strings"

	"github.com/prometheus/prometheus/promql/parser"
)

// labelString renders labels the way Loki writes stream selectors: {a="b", c="d"}.
func labelString(m map[string]string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range sortedKeys(m) {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(strconv.Quote(m[k]))
	}
	b.WriteByte('}')
	return b.String()
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

var labelParser = parser.NewParser(parser.Options{})

func parseLabelString(s string) (map[string]string, error) {
	ls, err := labelParser.ParseMetric(s)
	if err != nil {
		return nil, err
	}
	return ls.Map(), nil
}
