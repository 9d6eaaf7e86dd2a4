package kube

import (
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// keys are the annotations flannel reads, the only ones the informer
// keeps.
func (a Annotations) keys() []string {
	return []string{a.SubnetKubeManaged, a.BackendType, a.BackendData, a.BackendV6Data, a.PublicIP, a.PublicIPv6,
		a.PublicIPOverwrite, a.PublicIPv6Overwrite, a.NodePublicIP, a.NodePublicIPv6}
}

// slim is the informer's transform: of each node it keeps only what
// flannelu reads (name, resourceVersion, creation and deletion times,
// flannel's annotations, the podCIDRs) and, of this host's own node, the
// NetworkUnavailable condition the lease keeper looks after. A node as
// kubelet registers it carries labels, kubelet's annotations, managed
// fields, addresses, capacity, conditions and the list of its images:
// about 6 KB of JSON, most of the informer's memory at 5,000 nodes, none
// of which a flannel reads.
func (s *Store) slim(obj any) (any, error) {
	n, ok := obj.(*v1.Node)
	if !ok {
		return obj, nil // a tombstone: its node was slimmed when cached
	}
	return s.slimNode(n), nil
}

// slimNode is slim of one node, a new object.
func (s *Store) slimNode(n *v1.Node) *v1.Node {
	out := &v1.Node{
		TypeMeta: n.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion,
			CreationTimestamp: n.CreationTimestamp, DeletionTimestamp: n.DeletionTimestamp},
		Spec: v1.NodeSpec{PodCIDR: n.Spec.PodCIDR, PodCIDRs: n.Spec.PodCIDRs},
	}
	for _, k := range s.annKeys {
		if v, ok := n.Annotations[k]; ok {
			if out.Annotations == nil {
				out.Annotations = make(map[string]string, 8)
			}
			out.Annotations[k] = v
		}
	}
	if n.Name == s.node {
		if c := conditionOf(n, v1.NodeNetworkUnavailable); c != nil {
			out.Status.Conditions = []v1.NodeCondition{*c}
		}
	}
	return out
}
