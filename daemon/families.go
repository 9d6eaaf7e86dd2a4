package daemon

import "github.com/flannelu/flannelu/subnet"

// families are the address families the network config enables: the
// underlay needs an address of each.
type families struct{ v4, v6 bool }

func familiesOf(cfg *subnet.Config) families {
	return families{v4: cfg.EnableIPv4, v6: cfg.EnableIPv6}
}
