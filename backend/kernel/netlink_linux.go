package kernel

import (
	"errors"
	"fmt"

	"github.com/flannelu/flannelu/backend"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DumpAttempts is how many times Dump runs a dump before giving up.
const DumpAttempts = 5

// Dump runs a netlink dump and retries it when the kernel flags it as
// interrupted (the table changed while it was read: netlink returns
// netlink.ErrDumpInterrupted with partial results) or the call returns
// EINTR. A partial dump is never returned: deciding that an entry is
// missing or stale from an inconsistent view would make the reconcile
// loop add or delete the wrong things.
func Dump[T any](what string, dump func() ([]T, error)) ([]T, error) {
	var err error
	for range DumpAttempts {
		var out []T
		out, err = dump()
		if err == nil {
			return out, nil
		}
		if !Retryable(err) {
			return nil, fmt.Errorf("dump %s: %w", what, err)
		}
	}
	return nil, fmt.Errorf("dump %s: still interrupted after %d attempts: %w", what, DumpAttempts, err)
}

// Retryable reports whether err is a transient netlink failure worth
// repeating the same request for.
func Retryable(err error) bool {
	return errors.Is(err, netlink.ErrDumpInterrupted) || errors.Is(err, unix.EINTR) ||
		errors.Is(err, unix.EAGAIN)
}

// NotExist reports whether err says the object to delete is already gone
// (ESRCH for routes, ENOENT for neighbours and fdb entries, EADDRNOTAVAIL
// for addresses). Deletes treat that as success: the goal is reached.
func NotExist(err error) bool {
	return errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT) ||
		errors.Is(err, unix.EADDRNOTAVAIL)
}

// IgnoreNotExist returns nil when err is NotExist, else err.
func IgnoreNotExist(err error) error {
	if NotExist(err) {
		return nil
	}
	return err
}

// Routes lists the unicast routes of family f in the main table that go
// out of link index, retried as Dump does.
func Routes(h *netlink.Handle, f backend.Family, link int) ([]netlink.Route, error) {
	filter := &netlink.Route{LinkIndex: link, Table: unix.RT_TABLE_MAIN}
	return Dump(f.String()+" routes", func() ([]netlink.Route, error) {
		return h.RouteListFiltered(f.Netlink(), filter, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	})
}

// Neighs lists the neighbour entries (family unix.AF_INET or AF_INET6) or
// the fdb entries (family unix.AF_BRIDGE) of a link, retried as Dump does.
func Neighs(h *netlink.Handle, link, family int) ([]netlink.Neigh, error) {
	return Dump("neighbours", func() ([]netlink.Neigh, error) {
		return h.NeighList(link, family)
	})
}

// Addrs lists the addresses of family f on a link, retried as Dump does.
func Addrs(h *netlink.Handle, f backend.Family, link netlink.Link) ([]netlink.Addr, error) {
	return Dump(f.String()+" addresses", func() ([]netlink.Addr, error) {
		return h.AddrList(link, f.Netlink())
	})
}

// OnLink reports whether gw is directly reachable out of link: the
// kernel's route lookup for it yields that link and no gateway.
func OnLink(h *netlink.Handle, gw []byte, link int) (bool, error) {
	routes, err := h.RouteGet(gw)
	if err != nil {
		if errors.Is(err, unix.ENETUNREACH) || errors.Is(err, unix.EHOSTUNREACH) {
			return false, nil
		}
		return false, fmt.Errorf("route lookup %v: %w", gw, err)
	}
	for _, r := range routes {
		if r.LinkIndex == link && r.Gw == nil {
			return true, nil
		}
	}
	return false, nil
}

// Flannels reports whether a route may be one flannel made: flanneld and
// flannelu write their routes with netlink's default protocol, boot (as
// `ip route add` does unless told otherwise). Routes of any other origin,
// the kernel's own, `proto static` ones, a routing daemon's, are never
// flannel's to delete.
func Flannels(r *netlink.Route) bool { return r.Protocol == unix.RTPROT_BOOT }
