package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/flannelu/flannelu/internal/outage"
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

// Client is the part of the core/v1 API flannelu uses (nodes: list,
// watch, patch status; pods: get) on client-go's REST client, with a
// scheme that knows core/v1 alone. Every request's outcome goes to one
// outage tracker, as the etcd store's do: an API server that stops
// answering is logged when that starts and when it ends, and shows in
// /readyz and /metrics while it lasts. client-go's generated core/v1 client
// registers every API group of Kubernetes and its apply configurations,
// which made the binary a good deal larger (BENCHMARKS.md, "Choices
// measured in the code").
type Client struct {
	rest  *rest.RESTClient
	reach *outage.Tracker
}

var (
	coreScheme = runtime.NewScheme()
	coreParams = runtime.NewParameterCodec(coreScheme)
)

func init() {
	utilruntime.Must(v1.AddToScheme(coreScheme))
	metav1.AddToGroupVersion(coreScheme, v1.SchemeGroupVersion)
}

// NewClient returns the client for cfg's API server; log (default
// slog.Default()) gets the outage lines.
func NewClient(cfg *rest.Config, log *slog.Logger) (*Client, error) {
	c := rest.CopyConfig(cfg)
	c.GroupVersion = &v1.SchemeGroupVersion
	c.APIPath = "/api"
	c.NegotiatedSerializer = serializer.NewCodecFactory(coreScheme).WithoutConversion()
	// Lists and watches of the nodes in protobuf, JSON where a server (or
	// a proxy) offers nothing else: a node decodes several times faster
	// from protobuf, which at thousands of nodes is most of the start-up.
	// Request bodies (the patches) are JSON, as flanneld sends them.
	c.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	c.ContentType = runtime.ContentTypeJSON
	if c.UserAgent == "" {
		c.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("kube: client for %s: %w", cfg.Host, err)
	}
	return &Client{rest: rc, reach: outage.New(outage.Options{What: "Kubernetes API", Where: cfg.Host, Logger: log})}, nil
}

// Outage is the tracker every request reports to.
func (c *Client) Outage() *outage.Tracker { return c.reach }

// ListNodes lists the nodes.
func (c *Client) ListNodes(ctx context.Context, opts metav1.ListOptions) (*v1.NodeList, error) {
	out := &v1.NodeList{}
	sent := time.Now()
	err := c.rest.Get().Resource("nodes").VersionedParams(&opts, coreParams).
		Timeout(timeout(opts)).Do(ctx).Into(out)
	return out, c.report(ctx, sent, err)
}

// WatchNodes watches the nodes. The watch's start is reported; when the
// stream breaks, the informer's next list or watch reports what follows.
func (c *Client) WatchNodes(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	sent := time.Now()
	w, err := c.rest.Get().Resource("nodes").VersionedParams(&opts, coreParams).
		Timeout(timeout(opts)).Watch(ctx)
	return w, c.report(ctx, sent, err)
}

// PatchNodeStatus patches a node's status subresource.
func (c *Client) PatchNodeStatus(ctx context.Context, name string, pt types.PatchType, data []byte) (*v1.Node, error) {
	out := &v1.Node{}
	sent := time.Now()
	err := c.rest.Patch(pt).Resource("nodes").Name(name).SubResource("status").Body(data).Do(ctx).Into(out)
	return out, c.report(ctx, sent, err)
}

// How the API server is probed (Probe): a watch on an API server that
// went silent (its packets dropped, no refusal or reset) says nothing, an
// HTTP/2 connection is found dead only after client-go's health check (30 s
// idle, then a 15 s ping) and the informer's next list then waits on the
// dial, so an outage would go unnoticed for a minute or more. The etcd
// store's keeper reads its key as often, with as long a timeout.
const (
	ProbeInterval = 10 * time.Second
	ProbeTimeout  = 5 * time.Second
)

// Probe reads node every ProbeInterval, each read bounded by ProbeTimeout,
// until ctx ends; the outcome goes to the outage tracker like any other
// request's (a 404 is an answer). A read of one object without a
// resourceVersion goes to etcd, as the lists do, so an API server cut off
// from its etcd is not taken for a reachable one.
func (c *Client) Probe(ctx context.Context, node string) {
	tick := time.NewTicker(ProbeInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		sent := time.Now()
		err := c.rest.Get().Resource("nodes").Name(node).Timeout(ProbeTimeout).Do(ctx).Error()
		c.report(ctx, sent, err) //nolint:errcheck // reported to the tracker; the node itself is not used
	}
}

// GetPod reads a pod.
func (c *Client) GetPod(ctx context.Context, namespace, name string) (*v1.Pod, error) {
	out := &v1.Pod{}
	sent := time.Now()
	err := c.rest.Get().Namespace(namespace).Resource("pods").Name(name).Do(ctx).Into(out)
	return out, c.report(ctx, sent, err)
}

// report tells the outage tracker how a request sent at sent went and
// returns its error. A request the caller cancelled says nothing.
func (c *Client) report(ctx context.Context, sent time.Time, err error) error {
	switch {
	case err == nil || answered(err):
		c.reach.OK()
	case ctx.Err() != nil:
	default:
		c.reach.Fail(sent, err)
	}
	return err
}

// answered reports whether err is the API server's answer (a refusal, a
// conflict, 404, 410, 429, even a 500 from an admission webhook) rather
// than the lack of one: no connection, a timeout, or a gateway or server
// that cannot serve (502, 503, 504: a server starting, or cut off from
// its etcd).
func answered(err error) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return false
	}
	switch code := status.Status().Code; code {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return false
	default:
		return code > 0
	}
}

func timeout(opts metav1.ListOptions) time.Duration {
	if opts.TimeoutSeconds == nil {
		return 0
	}
	return time.Duration(*opts.TimeoutSeconds) * time.Second
}

// NodeName finds this host's node as flanneld does: NODE_NAME, else the
// spec.nodeName of the pod POD_NAMESPACE/POD_NAME (flannelu running in a
// DaemonSet pod).
func NodeName(ctx context.Context, client *Client, getenv func(string) string) (string, error) {
	if name := getenv("NODE_NAME"); name != "" {
		return name, nil
	}
	pod, ns := getenv("POD_NAME"), getenv("POD_NAMESPACE")
	if pod == "" || ns == "" {
		return "", errors.New("kube: the node name is unknown: set NODE_NAME, or POD_NAME and POD_NAMESPACE (the DaemonSet sets them from the downward API)")
	}
	p, err := client.GetPod(ctx, ns, pod)
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
