package subnet

import (
	"net/netip"
	"testing"
)

func TestSubnetKeyRoundTrip(t *testing.T) {
	for _, tt := range []struct{ key, sn, sn6 string }{
		{"198.18.40.0-24", "198.18.40.0/24", ""},
		{"198.18.40.0-24&fc00::-64", "198.18.40.0/24", "fc00::/64"},
		{"0.0.0.0-0&fc00:0:0:5::-64", "", "fc00:0:0:5::/64"},
	} {
		sn, sn6, err := ParseSubnetKey("/coreos.com/network/subnets/" + tt.key)
		if err != nil {
			t.Errorf("ParseSubnetKey(%s): %v", tt.key, err)
			continue
		}
		if pstr(sn) != tt.sn || pstr(sn6) != tt.sn6 {
			t.Errorf("ParseSubnetKey(%s) = %v %v, want %s %s", tt.key, sn, sn6, tt.sn, tt.sn6)
		}
		if got := MakeSubnetKey(sn, sn6); got != tt.key {
			t.Errorf("MakeSubnetKey = %s, want %s", got, tt.key)
		}
	}
}

func pstr(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return p.String()
}

func TestParseSubnetKeyErrors(t *testing.T) {
	for _, k := range []string{
		"", "198.18.40.0", "198.18.40.1-24", "198.18.40.0-33", "198.18.40.0-+24", "198.18.40.0-024",
		"fc00::-64", "198.18.40.0-24&198.18.41.0-24", "198.18.40.0-24&fc00:0::-64", "198.18.040.0-24",
		"198.18.40.0-24&", "0.0.0.0-0",
	} {
		if sn, sn6, err := ParseSubnetKey(k); err == nil {
			t.Errorf("ParseSubnetKey(%q) = %v %v, want an error", k, sn, sn6)
		}
	}
}

func FuzzParseSubnetKey(f *testing.F) {
	for _, s := range []string{"198.18.40.0-24", "198.18.40.0-24&fc00::-64", "0.0.0.0-0&fc00::-64", "/p/subnets/1.2.3.0-24", "x-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		sn, sn6, err := ParseSubnetKey(key)
		if err != nil {
			return
		}
		made := MakeSubnetKey(sn, sn6)
		sn2, sn62, err := ParseSubnetKey(made)
		if err != nil || sn2 != sn || sn62 != sn6 {
			t.Fatalf("%q -> %v %v -> %q -> %v %v %v", key, sn, sn6, made, sn2, sn62, err)
		}
	})
}
