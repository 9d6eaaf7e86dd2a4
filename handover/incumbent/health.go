package incumbent

import (
	"context"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"time"
)

// flanneldHealthz is the body of flanneld's /healthz (flannelu answers
// the same, with a newline).
const flanneldHealthz = "flanneld is running"

// answersAsFlanneld: GET /healthz on addr (the loopback address when
// addr's IP is unspecified) answers flanneld's body.
func answersAsFlanneld(ctx context.Context, addr string) bool {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return false
	}
	ip := ap.Addr()
	switch {
	case ip.IsUnspecified() && ip.Is4():
		ip = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	case ip.IsUnspecified():
		ip = netip.IPv6Loopback()
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	url := "http://" + netip.AddrPortFrom(ip, ap.Port()).String() + "/healthz"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	client := &http.Client{Transport: &http.Transport{Proxy: nil}}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	return resp.StatusCode == http.StatusOK && strings.HasPrefix(string(b), flanneldHealthz)
}
