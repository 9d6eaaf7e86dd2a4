package daemon

import (
	"fmt"
	"strings"
)

// carried lists the backend types flannelu runs, for error messages.
var carried = []string{"udp", "vxlan", "host-gw", "wireguard", "ipip", "extension", "alloc"}

// refusals are flannel's backend types that flannelu does not carry, and
// why, with what to use instead. A network config naming one is an error
// at start-up, never a silent no-op.
var refusals = map[string]string{
	"ipsec": "flannel's ipsec backend runs strongswan's charon daemon for IKEv2 and has the kernel's ESP (xfrm) encrypt; " +
		"flannelu carries neither, and these hosts' kernels have no ESP. For encrypted pod traffic use \"wireguard\"; " +
		"without encryption \"vxlan\", \"ipip\" or \"udp\"",
	"aws-vpc":     cloudRoutes("an AWS VPC route table"),
	"gce":         cloudRoutes("a Google Cloud network's routes"),
	"ali-vpc":     cloudRoutes("an Alibaba Cloud VPC route table"),
	"tencent-vpc": cloudRoutes("a Tencent Cloud VPC route table"),
}

func cloudRoutes(what string) string {
	return "it programs " + what + " through the provider's API, which flannelu does not carry. Use \"host-gw\" " +
		"where the hosts share a layer-2 network, else \"vxlan\" (or \"alloc\" and let the provider's own controller route the subnets)"
}

// refuse is the start-up error for a backend type flannelu does not run.
func refuse(backendType string) error {
	if why, ok := refusals[strings.ToLower(backendType)]; ok {
		return fmt.Errorf("backend type %q in the network config is not supported by flannelu: %s", backendType, why)
	}
	return fmt.Errorf("backend type %q in the network config is not supported by flannelu (supported: %s)", backendType, strings.Join(carried, ", "))
}
