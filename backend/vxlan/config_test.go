package vxlan

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestParseConfigDefaultsAndValues(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Config
	}{
		{``, Config{VNI: 1, Port: 8472}},
		{`{"Type":"vxlan"}`, Config{VNI: 1, Port: 8472}},
		{`{"Type":"VXLAN","VNI":0,"Port":0}`, Config{VNI: 0, Port: 8472}},
		{`{"Type":"vxlan","VNI":16777215,"Port":4789,"GBP":true,"Learning":true,"DirectRouting":true,"MTU":1400}`,
			Config{VNI: 16777215, Port: 4789, GBP: true, Learning: true, DirectRouting: true, MTU: 1400}},
		{`{"Type":"vxlan","MacPrefix":"0E:2A","VNI":7}`, Config{VNI: 7, Port: 8472}}, // unknown fields ignored, as flanneld
	} {
		got, err := ParseConfig([]byte(tc.in))
		if err != nil {
			t.Errorf("ParseConfig(%s): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseConfig(%s) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestParseConfigErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct{ in, field string }{
		{`{"VNI":16777216}`, "VNI"},
		{`{"VNI":-1}`, "VNI"},
		{`{"Port":65536}`, "Port"},
		{`{"Port":-5}`, "Port"},
		{`{"MTU":40}`, "MTU"},
		{`{"MTU":117}`, "MTU"}, // the device would get less than IPv4's 68
		{`{"MTU":70000}`, "MTU"},
		{`{"Type":"host-gw"}`, "Type"},
		{`{"VNI":"1"}`, "VNI"},
		{`{"VNI":1.5}`, "VNI"},
		{`{"VNI":1`, "Backend config"},
	} {
		_, err := ParseConfig([]byte(tc.in))
		if err == nil {
			t.Errorf("ParseConfig(%s) accepted", tc.in)
			continue
		}
		if !strings.Contains(err.Error(), tc.field) {
			t.Errorf("ParseConfig(%s) error %q does not name %s", tc.in, err, tc.field)
		}
	}
}

func TestLeaseDataWireForm(t *testing.T) {
	d, err := ParseLeaseData([]byte(`{"VNI":1,"VtepMAC":"C6:D2:32:6F:8F:44"}`))
	if err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}`; string(out) != want {
		t.Errorf("marshal = %s, want flannel's %s", out, want)
	}
}

func TestParseLeaseDataRejects(t *testing.T) {
	for _, in := range []string{
		``, `null`, `{}`, `{"VNI":1}`, `{"VNI":1,"VtepMAC":"zz"}`,
		`{"VNI":1,"VtepMAC":"00:00:5e:00:53:01:02:03"}`, // 8-byte EUI-64
		`{"VNI":1,"VtepMAC":"01:00:5e:00:00:01"}`,       // multicast
		`{"VNI":1,"VtepMAC":"00:00:00:00:00:00"}`,
		`{"VNI":-1,"VtepMAC":"c6:d2:32:6f:8f:44"}`,
		`[1,2]`,
	} {
		if d, err := ParseLeaseData([]byte(in)); err == nil {
			t.Errorf("ParseLeaseData(%s) = %+v, want an error", in, d)
		}
	}
}

func FuzzParseVxlanOptions(f *testing.F) {
	for _, s := range []string{
		``, `{"Type":"vxlan","VNI":1,"Port":8472,"GBP":false,"Learning":false,"DirectRouting":false,"MTU":0}`,
		`{"VNI":16777216}`, `{"Port":0}`, `{"MTU":1e9}`, `{"Type":"udp"}`, `null`, `[]`, `{"VNI":null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data)
		if err != nil {
			return
		}
		if cfg.VNI < 0 || cfg.VNI > maxVNI || cfg.Port < 1 || cfg.Port > 65535 ||
			(cfg.MTU != 0 && (cfg.MTU < minMTU+Overhead || cfg.MTU > maxMTU)) {
			t.Fatalf("ParseConfig(%q) accepted out-of-range %+v", data, cfg)
		}
	})
}

func FuzzParseVxlanBackendData(f *testing.F) {
	for _, s := range []string{
		`{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}`, `{"VNI":1,"VtepMAC":"c6-d2-32-6f-8f-44"}`,
		`{"VNI":1}`, `null`, ``, `{"VtepMAC":"ff:ff:ff:ff:ff:ff"}`, `{"VNI":99999999999999999999}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := ParseLeaseData(data)
		if err != nil {
			return
		}
		if len(d.VtepMAC) != 6 || d.VtepMAC[0]&1 != 0 {
			t.Fatalf("ParseLeaseData(%q) accepted MAC %v", data, d.VtepMAC)
		}
		// What we accept must survive our own encoding, as a peer reads it.
		out, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseLeaseData(out)
		if err != nil || back.VNI != d.VNI || back.VtepMAC.String() != d.VtepMAC.String() {
			t.Fatalf("round trip of %q: %s -> %+v, %v", data, out, back, err)
		}
	})
}
