package udp

import (
	"fmt"

	"github.com/flannelu/flannelu/encap"
	"github.com/flannelu/flannelu/internal/drop"
)

// batchOffload is batch for a TUN opened with IFF_VNET_HDR
// and a socket with UDP GRO: one message may hold a run of datagrams from
// one peer. The coalescer merges consecutive TCP segments of a flow into
// one super-packet per TUN write (GRO towards the pod), written with one
// writev from where the datagrams were received: no payload is copied in
// userspace. It allocates nothing.
func (o *outside) batchOffload(k int) error {
	n, err := o.conn.ReadBatch(o.msgs[:k])
	if err != nil {
		return fmt.Errorf("read UDP: %w", err)
	}
	snap := o.routes.Snapshot()
	o.npkts = 0
	for i := range o.msgs[:n] {
		m := &o.msgs[i]
		if !o.fromPeer(m, snap) {
			continue
		}
		for j := 0; ; j++ {
			d, ok := m.Datagram(j)
			if !ok {
				break
			}
			size, ok := o.acceptInner(d, m, snap)
			if !ok {
				continue
			}
			if o.npkts == len(o.pkts) {
				o.flushCoalesced()
			}
			o.pkts[o.npkts] = d[:size]
			o.npkts++
		}
	}
	o.flushCoalesced()
	return nil
}

// dropRun counts every datagram of a message as dropped for one reason.
func (o *outside) dropRun(m *encap.Message, reason drop.Reason) {
	for j := 0; ; j++ {
		d, ok := m.Datagram(j)
		if !ok {
			return
		}
		o.count(drop.Outside, reason, d, m.Addr)
	}
}

// flushCoalesced writes the packets gathered so far: a lone one as it is
// (writeLone), more merged by the coalescer.
func (o *outside) flushCoalesced() {
	if o.npkts == 0 {
		return
	}
	if o.npkts > 1 || !o.writeLone() {
		o.writeCoalesced()
	}
	clear(o.pkts[:o.npkts]) // keep no reference into the receive buffers
	o.npkts = 0
}

// writeCoalesced merges the packets gathered and writes each merge with
// one writev.
func (o *outside) writeCoalesced() {
	var bytes uint64
	for _, p := range o.pkts[:o.npkts] {
		bytes += uint64(len(p))
	}
	writes := o.co.Coalesce(o.pkts[:o.npkts])
	failed := len(writes) - writeEach(o.drops, writes, drop.Outside, o.q.WriteParts)
	// A refused write loses the packets merged into it; count it as one,
	// the forwarded count stays an upper bound in that rare case.
	o.drops.AddForwarded(drop.Outside, uint64(o.npkts-failed), bytes)
}
