package loki

import (
	"sort"

	"github.com/prometheus/prometheus/promql/parser"
)

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
