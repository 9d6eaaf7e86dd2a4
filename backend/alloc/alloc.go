// Package alloc is flannel's alloc backend: the host takes a subnet lease
// and writes subnet.env, and nothing carries pod traffic between hosts
// (something outside flannel routes the subnets: a cloud's route table, a
// router fed by another daemon). As flanneld's, its lease names no
// BackendType and its peers' leases are not acted on.
package alloc

import (
	"context"
	"log/slog"

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/subnet"
)

// BackendType is the network config's Backend.Type; the lease itself
// carries none, as flanneld's alloc backend writes none.
const BackendType = "alloc"

// Backend allocates the subnet and programs nothing.
type Backend struct {
	ext *backend.ExternalInterface
	log *slog.Logger
}

var _ backend.Backend = (*Backend)(nil)

// New returns the backend; log may be nil.
func New(ext *backend.ExternalInterface, log *slog.Logger) *Backend {
	if log == nil {
		log = slog.Default()
	}
	return &Backend{ext: ext, log: log.With("backend", BackendType)}
}

// Init returns the public addresses (each family's only when the network
// carries it) and no backend type or data, as flanneld's alloc backend.
func (b *Backend) Init(context.Context) (subnet.LeaseAttrs, error) {
	return subnet.LeaseAttrs{PublicIP: b.ext.ExtAddr, PublicIPv6: b.ext.ExtV6Addr}, nil
}

// MTU is the external interface's: nothing is encapsulated.
func (b *Backend) MTU() int { return b.ext.Iface.MTU }

// Start creates no device and no route.
func (b *Backend) Start(_ context.Context, own subnet.Lease) error {
	b.log.Info("subnet allocated; the alloc backend carries no traffic between hosts", "subnet", own.Subnet, "ipv6_subnet", own.IPv6Subnet)
	return nil
}

// HandleEvents ignores peers: there is no data path to program.
func (b *Backend) HandleEvents(context.Context, []subnet.Event) {}

// Run waits for the end.
func (b *Backend) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}
