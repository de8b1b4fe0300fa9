package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestCommandLineRefusesWhatItDoesNotKnow: a typo or a subcommand that does
// not exist prints the usage and exits 2 instead of starting a server on the
// default ports.
func TestCommandLineRefusesWhatItDoesNotKnow(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"slo", "generate"}, `unknown command "slo"`},
		{[]string{"--storage.path=" + t.TempDir(), "extra"}, `unexpected argument "extra"`},
		{[]string{"--no-such-flag"}, "flag provided but not defined"},
		{[]string{"storage", "drop-everything"}, "usage: fleetgate storage drop-future"},
	} {
		var out, errb bytes.Buffer
		require.Equal(t, 2, dispatch(tc.args, &out, &errb), "%v", tc.args)
		require.Contains(t, errb.String(), tc.want, "%v", tc.args)
	}
	var out, errb bytes.Buffer
	require.Equal(t, 0, dispatch([]string{"help"}, &out, &errb))
	require.Contains(t, out.String(), "fleetgate check config FILE...")
}
