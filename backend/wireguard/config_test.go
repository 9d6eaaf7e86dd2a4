package wireguard

import (
	"strings"
	"testing"
	"time"
)

func TestParseConfigDefaultsAreFlanneld(t *testing.T) {
	for _, in := range []string{"", `{"Type":"wireguard"}`} {
		cfg, err := ParseConfig([]byte(in))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.ListenPort != 51820 || cfg.ListenPortV6 != 51821 || cfg.Mode != Separate || cfg.MTU != 0 || cfg.PSK != nil || cfg.Keepalive != 0 {
			t.Errorf("%q: %+v", in, cfg)
		}
	}
}

func TestParseConfigOptions(t *testing.T) {
	const psk = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
	cfg, err := ParseConfig([]byte(`{"Type":"wireguard","ListenPort":4000,"ListenPortV6":4001,"MTU":1400,"PSK":"` + psk +
		`","PersistentKeepaliveInterval":25,"Mode":"auto","Unknown":1}`))
	if err != nil {
		t.Fatal(err)
	}
	// PersistentKeepaliveInterval is seconds: flanneld multiplies its
	// decoded Duration by a second.
	if cfg.ListenPort != 4000 || cfg.ListenPortV6 != 4001 || cfg.MTU != 1400 || cfg.Keepalive != 25*time.Second || cfg.Mode != Auto ||
		cfg.PSK == nil || cfg.PSK.String() != psk {
		t.Errorf("%+v", cfg)
	}
}

func TestParseConfigErrorsNameTheField(t *testing.T) {
	const secret = "not-a-key-but-secret"
	for in, want := range map[string]string{
		`{"ListenPort":0}`:                   "ListenPort 0",
		`{"ListenPortV6":70000}`:             "ListenPortV6 70000",
		`{"MTU":100}`:                        "MTU 100",
		`{"Mode":"both"}`:                    `Mode "both"`,
		`{"Mode":""}`:                        `Mode ""`,
		`{"PersistentKeepaliveInterval":-1}`: "PersistentKeepaliveInterval -1",
		`{"PSK":"` + secret + `"}`:           "PSK is not a WireGuard key",
		`{"ListenPort":"x"}`:                 "Backend config",
	} {
		_, err := ParseConfig([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error with %q", in, err, want)
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("%s: the error shows the PSK: %v", in, err)
		}
	}
}

func TestLeaseDataIsFlanneld(t *testing.T) {
	k := mustKey(t, "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=")
	if got := string(marshalLeaseData(k, 51820)); got != `{"PublicKey":"yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=","Port":51820}` {
		t.Errorf("BackendData %s", got)
	}
	got, port, err := parseLeaseData([]byte(`{"PublicKey":"yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="}`))
	if err != nil || got != k || port != 0 {
		t.Errorf("a lease without Port (flanneld before v0.26.6): %v %d %v", got, port, err)
	}
	for _, bad := range []string{"", `{"PublicKey":"short"}`, `{"PublicKey":1}`, `[]`} {
		if _, _, err := parseLeaseData([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
