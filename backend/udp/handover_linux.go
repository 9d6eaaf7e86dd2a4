package udp

import (
	"errors"
	"fmt"

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
	for _, c := range b.conns {
		f, err := c.DupFile()
		if err != nil {
			h.Close()
			return nil, err
		}
		h.Sockets = append(h.Sockets, f)
	}
	return h, nil
}

// adopt takes over a predecessor's device and sockets (Options.Inherit):
// it owns them from here on, closing them on error.
func (b *Backend) adopt(h *Inherited) error {
	if len(h.Queues) == 0 || len(h.Queues) != len(h.Sockets) {
		h.Close()
		return fmt.Errorf("inherited %d TUN queues and %d sockets: need one of each per worker", len(h.Queues), len(h.Sockets))
	}
	var err error
	if b.dev, err = tun.Adopt(tun.Config{SelfPolled: true, Metrics: b.opts.Metrics}, h.Queues); err != nil {
		for _, f := range h.Sockets {
			f.Close()
		}
		return err
	}
	b.vnet = b.dev.VnetHdr()
	for i, f := range h.Sockets {
		c, err := encap.Adopt(encap.Config{GRO: b.vnet, SelfPolled: true, Metrics: b.opts.Metrics}, f)
		if err != nil {
			for _, f := range h.Sockets[i+1:] {
				f.Close()
			}
			return err
		}
		b.conns = append(b.conns, c)
	}
	return nil
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
