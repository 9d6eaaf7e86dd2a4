package udp

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

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
	b.kept.Store(true) // the predecessor forwards on them until it leaves
	sockets := slices.Concat(h.Sockets, h.Sockets6)
	var err error
	if b.dev, err = tun.Adopt(tun.Config{Metrics: b.opts.Metrics}, h.Queues); err != nil {
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

// KeepDevice says whether another process uses the device and sockets
// after this one: Run's end then closes this process's descriptors and
// retires nothing. Adopted ones are kept until the predecessor has left
// (KeepDevice(false)); a successor takes them (KeepDevice(true)).
func (b *Backend) KeepDevice(keep bool) { b.kept.Store(keep) }

// openDevice creates the TUN. A device of that name that no process holds
// (earlier flannelus kept theirs, persistent) is deleted first: the device
// is created fresh, as flanneld creates its own, and goes with the
// process that holds it.
func (b *Backend) openDevice(queues int) error {
	if kept, ok := keptTUN(b.opts.DeviceName); ok {
		if kept.Attrs().RawFlags&unix.IFF_LOWER_UP != 0 {
			return fmt.Errorf("TUN %s is in use by another process", b.opts.DeviceName)
		}
		if err := netlink.LinkDel(kept); err != nil {
			return fmt.Errorf("delete the TUN %s an earlier run left: %w", b.opts.DeviceName, err)
		}
		b.log.Info("deleted the TUN device an earlier run left; creating it anew", "device", b.opts.DeviceName)
	}
	return b.openTUN(queues)
}

// retire undoes, when no successor took them over, what a process may
// still hold duplicates of (a hand-over client that never finished): the
// sockets are disarmed (encap.Conn.Disarm: that process receives nothing
// and a restart binds beside it) and the device is deleted, which
// detaches every queue, its duplicates' too. The device goes as flanneld's
// goes when it stops: a flanneld started next asks the kernel for
// "flannel%d", which a device left here would turn into flannel1, its
// route refused because flannel0's is still there.
func (b *Backend) retire() {
	for _, c := range slices.Concat(b.conns, b.conns6) {
		if err := c.Disarm(); err != nil {
			b.log.Warn("disarming a UDP socket", "addr", c.LocalAddr(), "error", err)
		}
	}
	link, err := netlink.LinkByIndex(b.ifindex)
	if err != nil || link.Attrs().Name != b.dev.Name() || link.Type() != "tuntap" {
		return // gone already, or not ours any more
	}
	if err := netlink.LinkDel(link); err != nil {
		b.log.Warn("deleting the TUN device", "device", b.dev.Name(), "error", err)
	}
}
