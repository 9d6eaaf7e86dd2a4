package encap

import (
	"fmt"
	"os"
	"sync/atomic"
	"testing"

	"github.com/flannelu/flannelu/testbed"
)

var netnsSeq atomic.Int32

// newNetns is a fresh namespace for one test (lo up, IPv6 off), removed
// when the test ends.
func newNetns(tb testing.TB) testbed.NS {
	tb.Helper()
	return testbed.Namespace(tb, fmt.Sprintf("encap-%d-%d", os.Getpid(), netnsSeq.Add(1)))
}
