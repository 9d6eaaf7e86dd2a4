package kube

import (
	"context"
	"errors"
	"net/url"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// An answer of the API server, even a refusal, is no outage; no answer,
// or a server that cannot serve, is.
func TestAnsweredIsNoOutage(t *testing.T) {
	nodes := schema.GroupResource{Resource: "nodes"}
	for _, err := range []error{
		apierrors.NewForbidden(nodes, "n", errors.New("rbac")), apierrors.NewNotFound(nodes, "n"),
		apierrors.NewResourceExpired("too old"), apierrors.NewConflict(nodes, "n", errors.New("changed")),
		apierrors.NewTooManyRequests("slow down", 1), apierrors.NewInternalError(errors.New("webhook")),
	} {
		if !answered(err) {
			t.Errorf("%v: counted as an outage", err)
		}
	}
	for _, err := range []error{
		apierrors.NewServiceUnavailable("starting"), apierrors.NewTimeoutError("slow", 1),
		&url.Error{Op: "Get", URL: "https://192.0.2.1:6443/api/v1/nodes", Err: errors.New("dial tcp: connect: connection refused")},
		context.DeadlineExceeded,
	} {
		if answered(err) {
			t.Errorf("%v: counted as an answer", err)
		}
	}
}
