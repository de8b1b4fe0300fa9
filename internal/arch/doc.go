// Package arch holds the test that enforces the import rules of
// docs/architecture.md: the table there is the only copy of the rules.
package arch
