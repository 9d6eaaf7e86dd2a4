package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
)

// UserAgent is how flannelu introduces itself to the API server.
const UserAgent = "flannelu"

// RESTConfig builds the client config as flanneld does: from the API
// server URL and/or the kubeconfig file; with neither, the in-cluster
// config of a pod (its service account token and CA).
func RESTConfig(apiURL, kubeconfig string) (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags(apiURL, kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kube: client config (--kube-api-url %q, --kubeconfig-file %q): %w", apiURL, kubeconfig, err)
	}
	cfg.UserAgent = UserAgent
	return cfg, nil
}

// NewClient returns the core/v1 client: all flannelu uses, and far smaller
// in the binary than the whole clientset.
func NewClient(cfg *rest.Config) (corev1.CoreV1Interface, error) {
	c, err := corev1.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kube: client for %s: %w", cfg.Host, err)
	}
	return c, nil
}

// NodeName finds this host's node as flanneld does: NODE_NAME, else the
// spec.nodeName of the pod POD_NAMESPACE/POD_NAME (flannelu running in a
// DaemonSet pod).
func NodeName(ctx context.Context, client corev1.CoreV1Interface, getenv func(string) string) (string, error) {
	if name := getenv("NODE_NAME"); name != "" {
		return name, nil
	}
	pod, ns := getenv("POD_NAME"), getenv("POD_NAMESPACE")
	if pod == "" || ns == "" {
		return "", errors.New("kube: the node name is unknown: set NODE_NAME, or POD_NAME and POD_NAMESPACE (the DaemonSet sets them from the downward API)")
	}
	p, err := client.Pods(ns).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("kube: reading pod %s/%s for its node name: %w", ns, pod, permissionError(err, "pods", "", pod, "get"))
	}
	if p.Spec.NodeName == "" {
		return "", fmt.Errorf("kube: pod %s/%s has no spec.nodeName (not scheduled yet?)", ns, pod)
	}
	return p.Spec.NodeName, nil
}

// LogTo sends client-go's own log lines (klog) to log, so they come out
// in flannelu's format. It is process-wide.
func LogTo(log *slog.Logger) {
	klog.SetSlogLogger(log.With("component", "client-go"))
}
