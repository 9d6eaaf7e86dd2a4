package kube

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flannelu/flannelu/subnet"
)

// flannelConflist is flannel's 10-flannel.conflist (kube-flannel.yml's
// cni-conf.json).
const flannelConflist = `{"name":"cbr0","cniVersion":"0.3.1","plugins":[{"type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}},{"type":"portmap","capabilities":{"portMappings":true}}]}`

// TestManifestAsStored reads back what the API server stored of
// deploy/kube-flannelu.yml (every object was created with strict
// server-side validation when the environment started): the pieces
// kube-flannel users rely on are flannel's.
func TestManifestAsStored(t *testing.T) {
	e := sharedEnv(t)
	ctx := ctxFor(t, time.Minute)
	cm, err := e.KubeAdmin.CoreV1().ConfigMaps("kube-flannel").Get(ctx, "kube-flannel-cfg", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got, want any
	if err := json.Unmarshal([]byte(cm.Data["cni-conf.json"]), &got); err != nil {
		t.Fatalf("cni-conf.json: %v", err)
	}
	json.Unmarshal([]byte(flannelConflist), &want) //nolint:errcheck // a constant
	if !reflect.DeepEqual(got, want) {
		t.Errorf("cni-conf.json %s\nwant flannel's %s", cm.Data["cni-conf.json"], flannelConflist)
	}
	if _, err := subnet.ParseKubeConfig([]byte(cm.Data["net-conf.json"])); err != nil {
		t.Errorf("net-conf.json: %v", err)
	}

	role, err := e.KubeAdmin.RbacV1().ClusterRoles().Get(ctx, "flannel", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var rules []string
	for _, r := range role.Rules {
		rules = append(rules, fmt.Sprint(r.APIGroups, r.Resources, r.Verbs))
	}
	if want := []string{"[] [pods] [get]", "[] [nodes] [get list watch]", "[] [nodes/status] [patch]"}; !slices.Equal(rules, want) {
		t.Errorf("ClusterRole flannel rules %q, want flannel's %q", rules, want)
	}

	ds, err := e.KubeAdmin.AppsV1().DaemonSets("kube-flannel").Get(ctx, "kube-flannel-ds", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ru := ds.Spec.UpdateStrategy.RollingUpdate; ru == nil || ru.MaxSurge == nil || ru.MaxSurge.IntValue() != 1 || ru.MaxUnavailable.IntValue() != 0 {
		t.Errorf("update strategy %+v, want RollingUpdate with maxSurge 1, maxUnavailable 0", ds.Spec.UpdateStrategy)
	}
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork || spec.ServiceAccountName != "flannel" {
		t.Errorf("hostNetwork %v, serviceAccountName %q", spec.HostNetwork, spec.ServiceAccountName)
	}
	c := spec.Containers[0]
	if caps := c.SecurityContext.Capabilities.Add; !slices.Equal(caps, []v1.Capability{"NET_ADMIN", "NET_RAW"}) {
		t.Errorf("capabilities %v, want NET_ADMIN and NET_RAW", caps)
	}
	// --after-handover=wait: an old pod's container that handed over to
	// the new pod (maxSurge) must not exit, or it is restarted and takes
	// over again.
	if !slices.Contains(c.Args, "--kube-subnet-mgr") || !slices.Contains(c.Args, "--after-handover=wait") || c.LivenessProbe.HTTPGet.Path != "/healthz" || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("args %v, probes %s %s", c.Args, c.LivenessProbe.HTTPGet.Path, c.ReadinessProbe.HTTPGet.Path)
	}
	var mounts []string
	for _, m := range c.VolumeMounts {
		mounts = append(mounts, m.MountPath)
	}
	for _, p := range []string{"/run/flannel", "/etc/kube-flannel/", "/run/xtables.lock"} {
		if !slices.Contains(mounts, p) {
			t.Errorf("no mount at %s: %v", p, mounts)
		}
	}
	var env []string
	for _, ev := range c.Env {
		if ev.ValueFrom != nil {
			env = append(env, ev.Name+"=<"+ev.ValueFrom.FieldRef.FieldPath+">")
		} else {
			env = append(env, ev.Name+"="+ev.Value)
		}
	}
	if want := []string{"POD_NAME=<metadata.name>", "POD_NAMESPACE=<metadata.namespace>", "EVENT_QUEUE_DEPTH=5000", "CONT_WHEN_CACHE_NOT_READY=false"}; !slices.Equal(env, want) {
		t.Errorf("env %v, want kube-flannel v0.28.9's %v", env, want)
	}
	// kube-flannel v0.28.9's port and probes.
	probe := func(p *v1.Probe) string {
		return fmt.Sprintf("%s %s delay %d period %d", p.HTTPGet.Path, p.HTTPGet.Port.String(), p.InitialDelaySeconds, p.PeriodSeconds)
	}
	if len(c.Ports) != 1 || c.Ports[0].Name != "healthz" || c.Ports[0].ContainerPort != 8081 ||
		probe(c.LivenessProbe) != "/healthz healthz delay 10 period 30" || probe(c.ReadinessProbe) != "/readyz healthz delay 5 period 10" {
		t.Errorf("ports %+v, liveness %s, readiness %s; want kube-flannel v0.28.9's", c.Ports, probe(c.LivenessProbe), probe(c.ReadinessProbe))
	}
	if req := c.Resources.Requests; req.Cpu().String() != "100m" || req.Memory().String() != "50Mi" {
		t.Errorf("requests %v, want cpu 100m, memory 50Mi", req)
	}
	var inits [][]string
	for _, ic := range spec.InitContainers {
		inits = append(inits, append(ic.Command, ic.Args...))
	}
	wantInits := [][]string{{"cp", "-f", "/flannel", "/opt/cni/bin/flannel"},
		{"cp", "-f", "/etc/kube-flannel/cni-conf.json", "/etc/cni/net.d/10-flannel.conflist"}}
	if !reflect.DeepEqual(inits, wantInits) {
		t.Errorf("init containers %v, want %v", inits, wantInits)
	}
}
