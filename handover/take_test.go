package handover

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/flannelu/flannelu/handover/incumbent"
	"github.com/flannelu/flannelu/testbed/logtest"
)

// nothingElse says where no flanneld shows: a subnet file no process
// writes, no health port, no TUN.
func nothingElse(t *testing.T) incumbent.Options {
	return incumbent.Options{SubnetFile: filepath.Join(t.TempDir(), "subnet.env")}
}

// Take returns the running flannelu that hands over; with the socket off
// or nothing running, it returns nil at once.
func TestTakeFindsThePredecessor(t *testing.T) {
	a := abstractAddr(t)
	serve(t, a, waitLimit, nil)
	pred, err := Take(context.Background(), Search{Addr: a, On: true, Identity: ident, Incumbent: nothingElse(t), Log: discard()})
	if err != nil || pred == nil || pred.Lease.Subnet != lease.Subnet {
		t.Fatalf("Take = %v, %v; want the running flannelu's lease %v", pred, err, lease.Subnet)
	}
	pred.Abandon("a test")
	for _, s := range []Search{
		{Addr: a, On: false, Identity: ident},
		{Addr: abstractAddr(t), On: true, Identity: ident},
	} {
		s.Incumbent, s.Log = nothingElse(t), discard()
		if pred, err := Take(context.Background(), s); pred != nil || err != nil {
			t.Errorf("Take(on %v, %s) = %v, %v; want nothing to take over", s.On, s.Addr, pred, err)
		}
	}
}

// A flannelu that refuses (another network on the same socket) is waited
// for; once it stops, Take looks again and starts.
func TestTakeWaitsForARefusingFlannelu(t *testing.T) {
	a := abstractAddr(t)
	srvLog, stopServer := serveUntilStopped(t, a)
	other := ident
	other.Backend = "vxlan"
	logger, log := logtest.New(nil)
	type result struct {
		pred *Predecessor
		err  error
	}
	took := make(chan result, 1)
	go func() {
		p, err := Take(context.Background(), Search{Addr: a, On: true, Identity: other, Incumbent: nothingElse(t), Log: logger})
		took <- result{p, err}
	}()
	if err := srvLog.Wait(Refused, 1, waitLimit); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-took:
		t.Fatalf("Take returned %v, %v while the refusing flannelu runs", r.pred, r.err)
	default:
	}
	stopServer()
	r := <-took
	if r.pred != nil || r.err != nil {
		t.Fatalf("Take after the refusing flannelu stopped = %v, %v; want a normal start", r.pred, r.err)
	}
	if err := log.Wait("the flannelu that refused the hand-over has stopped; looking again", 1, waitLimit); err != nil {
		t.Fatal(err)
	}
}
