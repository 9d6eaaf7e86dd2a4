package subnet

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteEnvMatchesFlannel(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "flannel", "subnet.env")
	e := Env{Network: netip.MustParsePrefix("198.18.0.0/16"), Subnet: netip.MustParsePrefix("198.18.40.0/24"), MTU: 1472}
	if err := WriteEnv(path, e); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := "FLANNEL_NETWORK=198.18.0.0/16\nFLANNEL_SUBNET=198.18.40.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n"
	if string(got) != want {
		t.Fatalf("subnet.env:\n%s\nwant:\n%s", got, want)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v, want 0644", st.Mode().Perm())
	}
	back, err := ReadEnv(path)
	if err != nil || back != e {
		t.Fatalf("ReadEnv = %+v, %v; want %+v", back, err, e)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("temporary file left behind: %v", entries)
	}
}

func TestWriteEnvDualStack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "subnet.env")
	e := Env{
		Network: netip.MustParsePrefix("198.18.0.0/16"), Subnet: netip.MustParsePrefix("198.18.40.0/24"),
		IPv6Network: netip.MustParsePrefix("fc00::/48"), IPv6Subnet: netip.MustParsePrefix("fc00:0:0:28::/64"),
		MTU: 1450, IPMasq: true,
	}
	if err := WriteEnv(path, e); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	want := "FLANNEL_NETWORK=198.18.0.0/16\nFLANNEL_SUBNET=198.18.40.1/24\n" +
		"FLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:28::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
	if string(got) != want {
		t.Fatalf("subnet.env:\n%s\nwant:\n%s", got, want)
	}
	if back, err := ReadEnv(path); err != nil || back != e {
		t.Fatalf("ReadEnv = %+v, %v; want %+v", back, err, e)
	}
}

// An IPv6-only network's subnet.env has no IPv4 lines, as flanneld's
// WriteSubnetFile leaves them out when EnableIPv4 is false.
func TestWriteEnvIPv6Only(t *testing.T) {
	path := filepath.Join(t.TempDir(), "subnet.env")
	e := Env{IPv6Network: netip.MustParsePrefix("2001:db8:100::/48"), IPv6Subnet: netip.MustParsePrefix("2001:db8:100:ab12::/64"), MTU: 1430}
	if err := WriteEnv(path, e); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	want := "FLANNEL_IPV6_NETWORK=2001:db8:100::/48\nFLANNEL_IPV6_SUBNET=2001:db8:100:ab12::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n"
	if string(got) != want {
		t.Fatalf("subnet.env:\n%s\nwant:\n%s", got, want)
	}
	if back, err := ReadEnv(path); err != nil || back != e {
		t.Fatalf("ReadEnv = %+v, %v; want %+v", back, err, e)
	}
}

func TestReadEnvMissing(t *testing.T) {
	_, err := ReadEnv(filepath.Join(t.TempDir(), "nope"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v, want os.ErrNotExist", err)
	}
}

func TestReadEnvBadLines(t *testing.T) {
	for in, want := range map[string]string{
		"FLANNEL_NETWORK=198.18.0.0/16\nFLANNEL_SUBNET\n":                                     `line 2 "FLANNEL_SUBNET": want NAME=VALUE`,
		"FLANNEL_NETWORK=198.18.0.0/16\nFLANNEL_SUBNET=x\n":                                   `line 2: FLANNEL_SUBNET="x"`,
		"FLANNEL_NETWORK=fc00::/48\n":                                                         "wrong address family",
		"FLANNEL_NETWORK=198.18.0.0/16\nFLANNEL_SUBNET=198.18.1.1/24\nFLANNEL_MTU=-1\n":       "must be positive",
		"FLANNEL_NETWORK=198.18.0.0/16\nFLANNEL_SUBNET=198.18.1.1/24\nFLANNEL_IPMASQ=maybe\n": "FLANNEL_IPMASQ",
		"FLANNEL_MTU=1472\n":              "no FLANNEL_NETWORK",
		"FLANNEL_NETWORK=198.18.0.0/16\n": "without its FLANNEL_SUBNET",
	} {
		_, err := ParseEnv([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseEnv(%q) = %v, want %q", in, err, want)
		}
	}
}

func FuzzReadEnv(f *testing.F) {
	f.Add([]byte("FLANNEL_NETWORK=198.18.0.0/16\nFLANNEL_SUBNET=198.18.40.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n"))
	f.Add([]byte("# c\n\nFLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00::1/64\nFLANNEL_MTU=1\nX=y\n"))
	f.Add([]byte("FLANNEL_NETWORK=198.18.0.0/16\nFLANNEL_SUBNET"))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := ParseEnv(data)
		if err != nil || e.MTU <= 0 {
			return // MTU is optional when reading, required when writing
		}
		out, err := MarshalEnv(e)
		if err != nil {
			t.Fatalf("parsed %+v does not marshal: %v", e, err)
		}
		back, err := ParseEnv(out)
		if err != nil || back != e {
			t.Fatalf("round trip: %+v -> %q -> %+v, %v", e, out, back, err)
		}
	})
}
