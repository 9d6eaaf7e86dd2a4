package daemon

import (
	"strings"
	"testing"
)

func TestRefusedBackendsSayWhyAndWhatInstead(t *testing.T) {
	for _, tc := range []struct{ typ, want string }{
		{"ipsec", `"ipsec" in the network config is not supported by flannelu: flannel's ipsec backend runs strongswan's charon`},
		{"ipsec", `use "wireguard"`},
		{"aws-vpc", "AWS VPC route table"},
		{"gce", `Use "host-gw"`},
		{"ali-vpc", "Alibaba"},
		{"tencent-vpc", "Tencent"},
		{"carrier-pigeon", "(supported: udp, vxlan, host-gw, wireguard, ipip, extension, alloc)"},
	} {
		if err := refuse(tc.typ); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("refuse(%q) = %v, want it to contain %q", tc.typ, err, tc.want)
		}
	}
}
