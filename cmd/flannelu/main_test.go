package main

import "testing"

// The exit statuses a script or a unit file sees without starting the
// daemon: 2 for a bad command line, 0 for --version and --help.
func TestExitStatusWithoutRunning(t *testing.T) {
	for _, c := range []struct {
		args []string
		want int
	}{
		{[]string{"--no-such-flag"}, 2},
		{[]string{"--subnet-lease-renew-margin", "0"}, 2},
		{[]string{"unexpected-argument"}, 2},
		{[]string{"--version"}, 0},
		{[]string{"--help"}, 0},
	} {
		if got := realMain(c.args); got != c.want {
			t.Errorf("flannelu %v: exit status %d, want %d", c.args, got, c.want)
		}
	}
}
