package subnet

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
)

// The values flanneld v0.20.2 writes for each backend, byte for byte.
var flannelValues = []struct {
	name  string
	attrs LeaseAttrs
	json  string
}{
	{"udp", LeaseAttrs{PublicIP: netip.MustParseAddr("192.0.2.1")},
		`{"PublicIP":"192.0.2.1","PublicIPv6":null}`},
	{"vxlan", LeaseAttrs{PublicIP: netip.MustParseAddr("192.0.2.1"), BackendType: "vxlan",
		BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}`)},
		`{"PublicIP":"192.0.2.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}`},
	{"host-gw", LeaseAttrs{PublicIP: netip.MustParseAddr("192.0.2.1"), BackendType: "host-gw"},
		`{"PublicIP":"192.0.2.1","PublicIPv6":null,"BackendType":"host-gw"}`},
	{"dual-stack vxlan", LeaseAttrs{PublicIP: netip.MustParseAddr("192.0.2.1"), PublicIPv6: netip.MustParseAddr("2001:db8::1"),
		BackendType: "vxlan", BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}`),
		BackendV6Data: json.RawMessage(`{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:45"}`)},
		`{"PublicIP":"192.0.2.1","PublicIPv6":"2001:db8::1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},"BackendV6Data":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:45"}}`},
}

func TestMarshalLeaseAttrsMatchesFlannel(t *testing.T) {
	for _, tt := range flannelValues {
		got, err := MarshalLeaseAttrs(tt.attrs)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if string(got) != tt.json {
			t.Errorf("%s:\n got %s\nwant %s", tt.name, got, tt.json)
		}
		back, err := ParseLeaseAttrs([]byte(tt.json))
		if err != nil {
			t.Errorf("%s: parse flannel's value: %v", tt.name, err)
			continue
		}
		if !back.Equal(tt.attrs) {
			t.Errorf("%s: parsed %+v, want %+v", tt.name, back, tt.attrs)
		}
	}
}

func TestParseLeaseAttrsErrors(t *testing.T) {
	for in, want := range map[string]string{
		`{"PublicIP":"2001:db8::1","PublicIPv6":null}`:      `lease: PublicIP "2001:db8::1": not an IPv4 address`,
		`{"PublicIP":"192.0.2","PublicIPv6":null}`:          `lease: PublicIP "192.0.2": not an IPv4 address`,
		`{"PublicIPv6":null}`:                               `lease: PublicIP "": not an IPv4 address`,
		`{"PublicIP":"192.0.2.1","PublicIPv6":"192.0.2.2"}`: `lease: PublicIPv6 "192.0.2.2": not an IPv6 address`,
		`{"PublicIP":"0.0.0.0","PublicIPv6":null}`:          "without a PublicIPv6",
		`{"PublicIP":1}`:                                    "lease: invalid JSON",
		`garbage`:                                           "lease: invalid JSON",
	} {
		_, err := ParseLeaseAttrs([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseLeaseAttrs(%s) error = %v, want %q", in, err, want)
		}
	}
	if _, err := MarshalLeaseAttrs(LeaseAttrs{}); err == nil {
		t.Error("MarshalLeaseAttrs without a PublicIP succeeded")
	}
}

func TestParseLeaseAttrsIgnoresSpacing(t *testing.T) {
	a, err := ParseLeaseAttrs([]byte(`{ "PublicIP": "192.0.2.1", "BackendType":"vxlan", "BackendData": { "VNI": 1 } }`))
	if err != nil {
		t.Fatal(err)
	}
	if string(a.BackendData) != `{"VNI":1}` {
		t.Fatalf("BackendData = %s, want compact", a.BackendData)
	}
}

func FuzzParseLease(f *testing.F) {
	for _, v := range flannelValues {
		f.Add([]byte(v.json))
	}
	f.Add([]byte(`{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8::1"}`))
	f.Add([]byte(`{"PublicIP":"192.0.2.1","BackendData":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := ParseLeaseAttrs(data)
		if err != nil {
			return
		}
		out, err := MarshalLeaseAttrs(a)
		if err != nil {
			t.Fatalf("valid attrs %+v do not marshal: %v", a, err)
		}
		b, err := ParseLeaseAttrs(out)
		if err != nil || !b.Equal(a) {
			t.Fatalf("round trip of %s: %+v, %v; want %+v", out, b, err, a)
		}
	})
}

// BenchmarkParseLeaseAttrs: the cost per lease of a watch event or a list.
func BenchmarkParseLeaseAttrs(b *testing.B) {
	v := []byte(flannelValues[1].json)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseLeaseAttrs(v); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "leases/s")
}
