package kube

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

var (
	// ErrForbidden: the API server refused a request for want of an RBAC
	// permission; the error names it.
	ErrForbidden = errors.New("kube: forbidden by RBAC")
	// ErrLeaseLost: this host's node was deleted or got another podCIDR;
	// the lease it published is gone for good.
	ErrLeaseLost = errors.New("kube: lease lost")
)

// flannelRole is what flannel's ClusterRole grants, all flannelu needs.
const flannelRole = "pods get; nodes get, list, watch; nodes/status patch (flannel's ClusterRole, deploy/kube-flannelu.yml)"

// permissionError turns a 403 from the API server into an error naming
// the RBAC permission missing; any other error is returned as is.
func permissionError(err error, resource, subresource, name string, verbs ...string) error {
	if !isForbidden(err) {
		return err
	}
	rule := fmt.Sprintf("verb %s on resource %q", quoted(verbs), resource)
	if subresource != "" {
		rule += fmt.Sprintf(" subresource %q (%s/%s)", subresource, resource, subresource)
	}
	target := ""
	if name != "" {
		target = fmt.Sprintf(" (%s %q)", resource, name)
	}
	return fmt.Errorf("%w: missing permission %s in API group \"\"%s; flannelu needs %s: %v",
		ErrForbidden, rule, target, flannelRole, err)
}

// quoted lists verbs as "list" and "watch".
func quoted(verbs []string) string {
	q := make([]string, len(verbs))
	for i, v := range verbs {
		q[i] = strconv.Quote(v)
	}
	return strings.Join(q, " and ")
}

func isForbidden(err error) bool { return apierrors.IsForbidden(err) }

// isExpired: a watch's resourceVersion is older than what the API server
// keeps (410 Gone).
func isExpired(err error) bool { return apierrors.IsResourceExpired(err) || apierrors.IsGone(err) }
