package kube

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/flannelu/flannelu/subnet"
	"github.com/flannelu/flannelu/testbed"
	"github.com/flannelu/flannelu/testbed/logtest"
)

// env is a real kube-apiserver on a namespace host, with its etcd, and
// deploy/kube-flannelu.yml applied (so FlannelUser has exactly flannel's
// ClusterRole): a Kubernetes-mode testbed cluster whose flannelu is the
// store under test, in the test process.
type env struct{ *testbed.Cluster }

var shared struct {
	once sync.Once
	env  *env
	err  error
}

// sharedEnv is one API server for the package's tests (each starts in
// seconds, but not in no time on a loaded machine); tests use node names
// of their own and delete their nodes.
func sharedEnv(t *testing.T) *env {
	t.Helper()
	testbed.RequireRoot(t)
	shared.once.Do(func() { shared.env, shared.err = startEnv("kube", 1) })
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.env
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.env != nil {
		shared.env.Close()
	}
	os.Exit(code)
}

// startEnv builds a Kubernetes-mode cluster of hosts hosts.
func startEnv(name string, hosts int) (*env, error) {
	start := time.Now()
	c, err := testbed.NewCluster(testbed.ClusterOptions{
		Bed:    testbed.Options{Name: name, Hosts: hosts},
		Config: netConf,
		Kube:   true,
	})
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "etcd and kube-apiserver ready after %v\n", time.Since(start).Round(10*time.Millisecond))
	return &env{c}, nil
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// createNode creates a Node as kubelet and kube-controller-manager
// would leave it: registered, with podCIDRs when given. The node is
// deleted when the test ends.
func (e *env) createNode(t *testing.T, name string, annotations map[string]string, podCIDRs ...string) *v1.Node {
	t.Helper()
	n := node(name, annotations, podCIDRs...)
	out, err := e.KubeAdmin.CoreV1().Nodes().Create(ctxFor(t, 30*time.Second), n, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.deleteNode(name) })
	return out
}

func (e *env) deleteNode(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return e.KubeAdmin.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{})
}

func (e *env) getNode(t *testing.T, name string) *v1.Node {
	t.Helper()
	n, err := e.KubeAdmin.CoreV1().Nodes().Get(ctxFor(t, 30*time.Second), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// patchNode applies a merge patch as the admin (a user, or
// kube-controller-manager setting spec.podCIDR).
func (e *env) patchNode(t *testing.T, name, patch string, subresources ...string) {
	t.Helper()
	if _, err := e.KubeAdmin.CoreV1().Nodes().Patch(ctxFor(t, 30*time.Second), name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}, subresources...); err != nil {
		t.Fatalf("patch node %s %s: %v", name, patch, err)
	}
}

// storeLog is a store's log: its text, and its messages counted
// (testbed/logtest) for the test to wait on.
type storeLog struct {
	*logtest.Log
	mu   sync.Mutex
	text bytes.Buffer
}

func (l *storeLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.text.Write(p)
}

func (l *storeLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.text.String()
}

// wait waits until msg is logged, then checks that a line matches line
// (the message with its attributes).
func (l *storeLog) wait(t *testing.T, msg string, line *regexp.Regexp) {
	t.Helper()
	if err := l.Wait(msg, 1, 30*time.Second); err != nil {
		t.Fatalf("%v; log:\n%s", err, l)
	}
	if !line.MatchString(l.String()) {
		t.Fatalf("no log line matches %q; log:\n%s", line, l)
	}
}

const netConf = `{"Network":"198.18.0.0/16","Backend":{"Type":"vxlan"}}`

// newStore starts a store as user for node, with net-conf.json netConf;
// it stops when the test ends.
func (e *env) newStore(t *testing.T, user, nodeName string) (*Store, *storeLog) {
	t.Helper()
	logs := &storeLog{}
	logger, counts := logtest.New(logs)
	logs.Log = counts
	client, err := NewClient(e.KubeAPI.RESTConfig(user), logger)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := New(ctx, client, Options{
		NodeName:                  nodeName,
		NetConfPath:               e.NetConfPath,
		SetNodeNetworkUnavailable: true,
		Logger:                    logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("store log of %s:\n%s", nodeName, logs)
		}
	})
	return s, logs
}

func mustConfig(t *testing.T, s *Store) *subnet.Config {
	t.Helper()
	cfg, err := s.GetConfig(ctxFor(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// nodeName makes a name for this test's nodes: unique in the shared API
// server and a valid DNS label.
func nodeName(t *testing.T, suffix string) string {
	base := strings.ToLower(regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(t.Name(), "-"))
	if len(base) > 40 {
		base = base[:40]
	}
	return strings.Trim(base, "-") + "-" + suffix
}
