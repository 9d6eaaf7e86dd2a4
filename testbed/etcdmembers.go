package testbed

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
)

// EtcdPeerPort is the members' peer port on their underlay addresses.
const EtcdPeerPort = 2380

// StartEtcdMembers starts an n-member etcd cluster, member i on host i's
// underlay address (as a cluster's etcd members would sit on separate
// machines), and waits until every member serves clients.
func (b *Bed) StartEtcdMembers(n int) ([]*Etcd, error) {
	if n > len(b.Hosts) {
		return nil, fmt.Errorf("testbed: %d etcd members need as many hosts, have %d", n, len(b.Hosts))
	}
	var initial []string
	for _, h := range b.Hosts[:n] {
		initial = append(initial, fmt.Sprintf("m%d=http://%s", h.Index, ListenAddr(h.Addr, EtcdPeerPort)))
	}
	var members []*Etcd
	for _, h := range b.Hosts[:n] {
		client := "http://" + ListenAddr(h.Addr, EtcdPort)
		peer := "http://" + ListenAddr(h.Addr, EtcdPeerPort)
		name := fmt.Sprintf("m%d", h.Index)
		p, err := b.Start(h.NS, "etcd-"+name, "etcd",
			"--name", name, "--data-dir", filepath.Join(b.Dir, "etcd-"+name),
			"--listen-client-urls", client, "--advertise-client-urls", client,
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--log-level", "warn")
		if err != nil {
			return nil, fmt.Errorf("start etcd member %s: %w", name, err)
		}
		members = append(members, &Etcd{Proc: p, Host: h, Endpoint: client})
	}
	for _, m := range members {
		if err := WaitTCP(m.Host.NS, strings.TrimPrefix(m.Endpoint, "http://"), 20*time.Second); err != nil {
			return nil, fmt.Errorf("etcd member did not come up (log %s): %w", m.Proc.Log, err)
		}
	}
	return members, nil
}

// MembersClient returns an etcd client for the test process that knows
// every member, its connections opened inside host 1's namespace (which
// reaches all of them over the underlay).
func MembersClient(members []*Etcd) (*clientv3.Client, error) {
	var eps []string
	for _, m := range members {
		eps = append(eps, strings.TrimPrefix(m.Endpoint, "http://"))
	}
	via := members[0].Host
	dial := func(ctx context.Context, addr string) (net.Conn, error) { return via.Dial(ctx, addr) }
	return clientv3.New(clientv3.Config{
		Endpoints:   eps,
		DialTimeout: 5 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(dial)},
		Logger:      quietLogger(),
	})
}
