package udp

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"

	"github.com/vishvananda/netlink"

	"github.com/flannelu/flannelu/encap"
	"github.com/flannelu/flannelu/tun"
)

// HandOff duplicates the TUN queues and sockets for a successor process
// (see Inherited). The backend keeps forwarding: until it stops, both
// processes read the same queues and sockets, and each packet is read by
// one of them.
func (b *Backend) HandOff() (*Inherited, error) {
	if b.dev == nil {
		return nil, errors.New("udp backend not started")
	}
	queues, err := b.dev.DupFiles()
	if err != nil {
		return nil, err
	}
	h := &Inherited{Queues: queues}
	for _, fam := range []struct {
		conns []*encap.Conn
		into  *[]*os.File
	}{{b.conns, &h.Sockets}, {b.conns6, &h.Sockets6}} {
		for _, c := range fam.conns {
			f, err := c.DupFile()
			if err != nil {
				h.Close()
				return nil, err
			}
			*fam.into = append(*fam.into, f)
		}
	}
	return h, nil
}

// adopt takes over a predecessor's device and sockets (Options.Inherit):
// it owns them from here on, closing them on error. A family's sockets
// come one per queue, or not at all (listen opens them then); IPv6
// sockets of a network that no longer carries IPv6 are closed.
func (b *Backend) adopt(h *Inherited) error {
	perQueue := func(fs []*os.File) bool { return len(fs) == 0 || len(fs) == len(h.Queues) }
	if len(h.Queues) == 0 || !perQueue(h.Sockets) || !perQueue(h.Sockets6) || len(h.Sockets)+len(h.Sockets6) == 0 {
		h.Close()
		return fmt.Errorf("inherited %d TUN queues, %d IPv4 and %d IPv6 sockets: need the sockets of a family one per queue",
			len(h.Queues), len(h.Sockets), len(h.Sockets6))
	}
	sockets := slices.Concat(h.Sockets, h.Sockets6)
	var err error
	if b.dev, err = tun.Adopt(tun.Config{SelfPolled: true, Metrics: b.opts.Metrics}, h.Queues); err != nil {
		closeAll(sockets)
		return err
	}
	b.vnet = b.dev.VnetHdr()
	for i, f := range sockets {
		c, err := encap.Adopt(encap.Config{GRO: b.vnet, SelfPolled: true, Metrics: b.opts.Metrics}, f)
		if err != nil {
			closeAll(sockets[i+1:])
			return err
		}
		switch {
		case i < len(h.Sockets):
			b.conns = append(b.conns, c)
		case b.has6() && c.LocalAddr() == netip.AddrPortFrom(b.ext.IfaceV6Addr, uint16(b.port)):
			b.conns6 = append(b.conns6, c)
		default: // not the IPv6 socket this process would open: listen opens that
			c.Close()
		}
	}
	return nil
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// openPersistent opens the TUN and makes it persistent. A device left by
// an earlier run is attached to as it is, unless its multiqueue mode does
// not match (a changed --udp-workers), which the kernel would refuse: it
// is then deleted and created again.
func (b *Backend) openPersistent(queues int) error {
	if kept, ok := keptTUN(b.opts.DeviceName); ok && kept.Flags&netlink.TUNTAP_MULTI_QUEUE != 0 != (queues > 1) {
		if err := deleteDevice(b.opts.DeviceName); err != nil {
			return fmt.Errorf("delete the kept TUN %s (its queue mode does not match --udp-workers): %w", b.opts.DeviceName, err)
		}
		b.log.Info("deleted the kept TUN device: its queue mode does not match --udp-workers", "device", b.opts.DeviceName)
	}
	if err := b.openTUN(queues); err != nil {
		return err
	}
	if err := b.dev.SetPersist(true); err != nil {
		return fmt.Errorf("TUN %s: %w", b.dev.Name(), err)
	}
	return nil
}
