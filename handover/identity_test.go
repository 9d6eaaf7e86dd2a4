package handover

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/flannelu/flannelu/subnet"
)

func TestEtcdStoreIgnoresOrderAndSpelling(t *testing.T) {
	a := EtcdStore("http://192.0.2.1:2379,http://192.0.2.2:2379", "/coreos.com/network")
	b := EtcdStore(" http://192.0.2.2:2379/, http://192.0.2.1:2379", "/coreos.com/network/")
	if a != b {
		t.Errorf("%q != %q", a, b)
	}
	if c := EtcdStore("http://192.0.2.1:2379,http://192.0.2.2:2379", "/other"); c == a {
		t.Errorf("another prefix names the same store: %q", c)
	}
}

func TestNetworkOfNamesTheConfig(t *testing.T) {
	parse := func(s string) *subnet.Config {
		cfg, err := subnet.ParseConfig([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	a := NetworkOf(parse(`{"Network":"198.18.0.0/16","Backend":{"Type":"vxlan","VNI":1}}`))
	b := NetworkOf(parse(`{"Network":"198.18.0.0/16", "Backend": { "Type": "vxlan", "VNI": 1 }}`))
	if a != b || !strings.Contains(a, "198.18.0.0/16") {
		t.Errorf("the same config named %q and %q", a, b)
	}
	for _, other := range []string{
		`{"Network":"198.18.0.0/16","Backend":{"Type":"vxlan","VNI":2}}`,
		`{"Network":"198.18.0.0/17","Backend":{"Type":"vxlan","VNI":1}}`,
		`{"Network":"198.18.0.0/16","SubnetLen":25,"Backend":{"Type":"vxlan","VNI":1}}`,
	} {
		if NetworkOf(parse(other)) == a {
			t.Errorf("%s named as %s", other, a)
		}
	}
}

// differs names the first field that differs, each side's value in turn.
func TestDiffersSaysWhat(t *testing.T) {
	other := ident
	if got := differs(ident, other); got != "" {
		t.Errorf("equal identities differ: %s", got)
	}
	other.Iface, other.PublicIP = "eth1", "198.51.100.1"
	if got := differs(ident, other); got != `interface "eth0" here, "eth1" there` {
		t.Errorf("differs: %s", got)
	}
	// An identity survives the wire as it is.
	b, err := json.Marshal(ident)
	if err != nil {
		t.Fatal(err)
	}
	var back Identity
	if err := json.Unmarshal(b, &back); err != nil || back != ident {
		t.Errorf("round trip: %+v %v", back, err)
	}
}
