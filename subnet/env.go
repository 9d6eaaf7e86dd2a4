package subnet

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/flannelu/flannelu/internal/atomicfile"
)

// Env is the content of subnet.env, which flannel's CNI plugin reads.
// Subnet and IPv6Subnet are the host's leases (masked, 198.18.40.0/24);
// the file carries their first address (198.18.40.1/24), as flanneld's does.
type Env struct {
	Network, Subnet         netip.Prefix
	IPv6Network, IPv6Subnet netip.Prefix
	MTU                     int
	IPMasq                  bool
}

// MarshalEnv renders e in flanneld's order: FLANNEL_NETWORK, FLANNEL_SUBNET,
// FLANNEL_IPV6_NETWORK, FLANNEL_IPV6_SUBNET (each family only when set),
// FLANNEL_MTU, FLANNEL_IPMASQ.
func MarshalEnv(e Env) ([]byte, error) {
	if e.Network.IsValid() != e.Subnet.IsValid() || e.IPv6Network.IsValid() != e.IPv6Subnet.IsValid() {
		return nil, errors.New("subnet.env: a network needs its subnet and a subnet its network")
	}
	if !e.Network.IsValid() && !e.IPv6Network.IsValid() {
		return nil, errors.New("subnet.env: neither an IPv4 nor an IPv6 network is set")
	}
	if e.MTU <= 0 {
		return nil, fmt.Errorf("subnet.env: MTU %d: must be positive", e.MTU)
	}
	var b bytes.Buffer
	if e.Network.IsValid() {
		fmt.Fprintf(&b, "FLANNEL_NETWORK=%s\n", e.Network.Masked())
		fmt.Fprintf(&b, "FLANNEL_SUBNET=%s/%d\n", firstHost(e.Subnet), e.Subnet.Bits())
	}
	if e.IPv6Network.IsValid() {
		fmt.Fprintf(&b, "FLANNEL_IPV6_NETWORK=%s\n", e.IPv6Network.Masked())
		fmt.Fprintf(&b, "FLANNEL_IPV6_SUBNET=%s/%d\n", firstHost(e.IPv6Subnet), e.IPv6Subnet.Bits())
	}
	fmt.Fprintf(&b, "FLANNEL_MTU=%d\n", e.MTU)
	fmt.Fprintf(&b, "FLANNEL_IPMASQ=%t\n", e.IPMasq)
	return b.Bytes(), nil
}

// WriteEnv writes subnet.env with mode 0644 through atomicfile: a reader
// sees the old file or the new one, never a partial one, and a failed
// write (a full disk) returns its error and leaves the old file as it was.
func WriteEnv(path string, e Env) error {
	data, err := MarshalEnv(e)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("subnet.env: %w", err)
	}
	return nil
}

// ReadEnv reads a subnet.env written by flanneld or WriteEnv, used to ask
// for the same subnet again after a restart. A missing file gives an error
// for which errors.Is(err, os.ErrNotExist) holds.
func ReadEnv(path string) (Env, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Env{}, fmt.Errorf("subnet.env: %w", err)
	}
	e, err := ParseEnv(data)
	if err != nil {
		return Env{}, fmt.Errorf("%s: %w", path, err)
	}
	return e, nil
}

// ParseEnv parses subnet.env content. Blank lines, # comments and unknown
// variables are ignored; a line that is not NAME=VALUE or a known variable
// with a bad value is an error naming the line.
func ParseEnv(data []byte) (Env, error) {
	var e Env
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, val, ok := strings.Cut(line, "=")
		if !ok {
			return Env{}, fmt.Errorf("line %d %q: want NAME=VALUE", n, line)
		}
		if err := e.set(name, val); err != nil {
			return Env{}, fmt.Errorf("line %d: %s=%q: %w", n, name, val, err)
		}
	}
	if err := sc.Err(); err != nil {
		return Env{}, err
	}
	if !e.Network.IsValid() && !e.IPv6Network.IsValid() {
		return Env{}, errors.New("no FLANNEL_NETWORK or FLANNEL_IPV6_NETWORK")
	}
	if e.Network.IsValid() && !e.Subnet.IsValid() || e.IPv6Network.IsValid() && !e.IPv6Subnet.IsValid() {
		return Env{}, errors.New("a network without its FLANNEL_SUBNET / FLANNEL_IPV6_SUBNET")
	}
	return e, nil
}

func (e *Env) set(name, val string) error {
	var err error
	switch name {
	case "FLANNEL_NETWORK":
		e.Network, err = parseEnvPrefix(val, true)
	case "FLANNEL_SUBNET":
		e.Subnet, err = parseEnvPrefix(val, true)
	case "FLANNEL_IPV6_NETWORK":
		e.IPv6Network, err = parseEnvPrefix(val, false)
	case "FLANNEL_IPV6_SUBNET":
		e.IPv6Subnet, err = parseEnvPrefix(val, false)
	case "FLANNEL_MTU":
		e.MTU, err = strconv.Atoi(val)
		if err == nil && e.MTU <= 0 {
			err = errors.New("must be positive")
		}
	case "FLANNEL_IPMASQ":
		e.IPMasq, err = strconv.ParseBool(val)
	}
	return err
}

// parseEnvPrefix parses 198.18.40.1/24 and returns it masked.
func parseEnvPrefix(s string, is4 bool) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if p.Addr().Is4() != is4 || p.Addr().Zone() != "" {
		return netip.Prefix{}, errors.New("wrong address family")
	}
	return p.Masked(), nil
}
