package testbed

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
)

// EtcdPort is the client port of the testbed's etcd.
const EtcdPort = 2379

// Etcd is a real etcd server (Debian's etcd-server) running in host 1's
// namespace on its underlay address, as a cluster's etcd would be.
type Etcd struct {
	Proc     *Proc
	Host     *Host
	Endpoint string // http://192.0.2.1:2379
}

// StartEtcd starts etcd in host 1 and waits until it serves clients.
func (b *Bed) StartEtcd() (*Etcd, error) {
	h := b.Hosts[0]
	client := "http://" + ListenAddr(h.Addr, EtcdPort)
	p, err := b.Start(h.NS, "etcd", "etcd",
		"--name", "fu", "--data-dir", filepath.Join(b.Dir, "etcd-data"),
		"--listen-client-urls", client+",http://127.0.0.1:2379",
		"--advertise-client-urls", client,
		"--listen-peer-urls", "http://127.0.0.1:2380",
		"--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "fu=http://127.0.0.1:2380",
		"--log-level", "warn")
	if err != nil {
		return nil, fmt.Errorf("start etcd (is etcd-server installed? make deps): %w", err)
	}
	if err := WaitTCP(h.NS, ListenAddr(h.Addr, EtcdPort), 20*time.Second); err != nil {
		return nil, fmt.Errorf("etcd did not come up (log %s): %w", p.Log, err)
	}
	return &Etcd{Proc: p, Host: h, Endpoint: client}, nil
}

// Client returns an etcd client for the test process, whose connections
// are opened inside host 1's namespace.
func (e *Etcd) Client() (*clientv3.Client, error) {
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		return e.Host.Dial(ctx, addr)
	}
	return clientv3.New(clientv3.Config{
		Endpoints:   []string{ListenAddr(e.Host.Addr, EtcdPort)},
		DialTimeout: 5 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(dial)},
		Logger:      quietLogger(),
	})
}
