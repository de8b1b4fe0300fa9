package arch

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const module = "github.com/fleetgate/fleetgate"

// rules reads the "Import rules" table of docs/architecture.md: package
// pattern → the fleetgate packages it may import.
func rules(t *testing.T, doc string) map[string][]string {
	f, err := os.Open(doc)
	require.NoError(t, err)
	defer f.Close()
	out := map[string][]string{}
	in := false
	cell := regexp.MustCompile("`([^`]+)`")
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "## ") {
			in = line == "## Import rules"
			continue
		}
		if !in || !strings.HasPrefix(line, "| `") {
			continue
		}
		cols := strings.Split(line, "|")
		require.GreaterOrEqual(t, len(cols), 4, "row %q", line)
		pkg := cell.FindStringSubmatch(cols[1])
		require.NotNil(t, pkg, "row %q", line)
		allowed := []string{}
		for _, m := range cell.FindAllStringSubmatch(cols[2], -1) {
			allowed = append(allowed, m[1])
		}
		out[pkg[1]] = allowed
	}
	require.NoError(t, sc.Err())
	require.NotEmpty(t, out, "no import table found in %s", doc)
	return out
}

// match reports whether pkg (relative to the module) is covered by pattern.
func match(pattern, pkg string) bool {
	if pattern == "*" {
		return true
	}
	if base, ok := strings.CutSuffix(pattern, "/…"); ok {
		return pkg == base || strings.HasPrefix(pkg, base+"/")
	}
	return pattern == pkg
}

// rowFor is the most specific row covering pkg.
func rowFor(table map[string][]string, pkg string) (string, bool) {
	best := ""
	for p := range table {
		if match(p, pkg) && len(p) > len(best) {
			best = p
		}
	}
	return best, best != ""
}

type listed struct {
	ImportPath string
	Imports    []string
}

// TestImportRules fails when a package imports a fleetgate package that
// its row of docs/architecture.md does not allow, or has no row.
func TestImportRules(t *testing.T) {
	root, err := filepath.Abs("../..")
	require.NoError(t, err)
	table := rules(t, filepath.Join(root, "docs", "architecture.md"))

	cmd := exec.Command("go", "list", "-tags", "e2e promdiff", "-json=ImportPath,Imports", "./...")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	raw, err := cmd.Output()
	require.NoError(t, err, stderr.String())

	var problems []string
	dec := json.NewDecoder(bytes.NewReader(raw))
	n := 0
	for dec.More() {
		var p listed
		require.NoError(t, dec.Decode(&p))
		n++
		pkg := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		row, ok := rowFor(table, pkg)
		if !ok {
			problems = append(problems, fmt.Sprintf("%s has no row in the import table of docs/architecture.md", pkg))
			continue
		}
		for _, imp := range p.Imports {
			dep, ok := strings.CutPrefix(imp, module+"/")
			if !ok {
				continue
			}
			if !slices.ContainsFunc(table[row], func(a string) bool { return match(a, dep) }) {
				problems = append(problems, fmt.Sprintf("%s imports %s; docs/architecture.md allows %s only %v", pkg, dep, row, table[row]))
			}
		}
	}
	require.Greater(t, n, 10, "go list found too few packages")
	require.Empty(t, problems, strings.Join(problems, "\n"))
}

// TestRulesCatchAWrongWayImport: the check is not vacuous.
func TestRulesCatchAWrongWayImport(t *testing.T) {
	table := map[string][]string{"store/…": {"store/seglog"}, "cmd/…": {"*"}}
	row, ok := rowFor(table, "store/metrics")
	require.True(t, ok)
	require.False(t, slices.ContainsFunc(table[row], func(a string) bool { return match(a, "ingest/pipeline") }))
	row, _ = rowFor(table, "cmd/fleetgate")
	require.True(t, slices.ContainsFunc(table[row], func(a string) bool { return match(a, "ingest/pipeline") }))
}
