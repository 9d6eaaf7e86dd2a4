package testbed

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// KubeAPIPort is the test API server's secure port.
const KubeAPIPort = 6443

// ServiceCIDR is the test API server's --service-cluster-ip-range.
const ServiceCIDR = "198.19.0.0/16"

// Users of the test API server's token file.
const (
	// AdminUser is in system:masters: everything is allowed.
	AdminUser = "admin"
	// FlannelUser is the name the API server gives the service account
	// flannel's DaemonSet runs as: the ClusterRoleBinding of
	// deploy/kube-flannelu.yml grants it flannel's ClusterRole.
	FlannelUser = "system:serviceaccount:kube-flannel:flannel"
	// LimitedUser has no permission unless a test grants it one.
	LimitedUser = "fu-limited"
)

var userGroups = map[string]string{
	AdminUser:   "system:masters",
	FlannelUser: "system:serviceaccounts,system:serviceaccounts:kube-flannel",
	LimitedUser: "",
}

// readyTimeout bounds a (re)start, which takes seconds on an idle
// two-core machine and many times that under load.
const readyTimeout = 90 * time.Second

// KubeAPIServer is a real kube-apiserver (built from testbed/kubeapi)
// running in a host's namespace on its underlay address, storing in the
// bed's etcd, with token authentication and RBAC.
type KubeAPIServer struct {
	Host *Host
	URL  string // https://192.0.2.1:6443
	Proc *Proc
	CA   []byte // PEM of the CA that signed its serving certificate

	bed    *Bed
	args   []string
	tokens map[string]string // user -> bearer token
}

// KubeAPIServerBinary is the kube-apiserver the tests run:
// $FLANNELU_KUBE_APISERVER, else .cache/bin/kube-apiserver of the
// repository (`make kube-apiserver` builds it there).
func KubeAPIServerBinary() (string, error) {
	if p := os.Getenv("FLANNELU_KUBE_APISERVER"); p != "" {
		return p, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	p := filepath.Join(root, ".cache", "bin", "kube-apiserver")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("no kube-apiserver at %s: run `make kube-apiserver` (builds testbed/kubeapi; the first build takes 7-20 minutes) or set FLANNELU_KUBE_APISERVER", p)
	}
	return p, nil
}

// StartKubeAPIServer starts kube-apiserver in host h on its underlay
// address, storing in etcd, and waits until /readyz answers ok. The bed
// stops it on Close. Two servers on two hosts may share one etcd, as an
// HA control plane does. extra are more flags (an audit log, say).
func (b *Bed) StartKubeAPIServer(h *Host, etcd *Etcd, extra ...string) (*KubeAPIServer, error) {
	bin, err := KubeAPIServerBinary()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(b.Dir, "kube-apiserver-"+h.Name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	certs, err := newPKI(dir, h.Addr, netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("198.19.0.1"))
	if err != nil {
		return nil, fmt.Errorf("testbed: certificates: %w", err)
	}
	k := &KubeAPIServer{Host: h, URL: "https://" + ListenAddr(h.Addr, KubeAPIPort), CA: certs.CA, bed: b, tokens: map[string]string{}}
	tokenFile, err := k.writeTokens(dir)
	if err != nil {
		return nil, err
	}
	k.args = []string{bin,
		"--etcd-servers=" + etcd.Endpoint,
		"--bind-address=" + h.Addr.String(),
		"--secure-port=" + fmt.Sprint(KubeAPIPort),
		"--advertise-address=" + h.Addr.String(),
		"--endpoint-reconciler-type=none",
		"--tls-cert-file=" + certs.CertFile,
		"--tls-private-key-file=" + certs.KeyFile,
		"--cert-dir=" + dir,
		"--token-auth-file=" + tokenFile,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + certs.SAKeyFile,
		"--service-account-signing-key-file=" + certs.SAKeyFile,
		"--authorization-mode=RBAC",
		"--service-cluster-ip-range=" + ServiceCIDR,
		// Less work for a loaded two-core machine; nothing under test
		// depends on these.
		"--enable-priority-and-fairness=false",
		"--profiling=false",
	}
	k.args = append(k.args, extra...)
	if err := k.Start(); err != nil {
		return nil, err
	}
	return k, nil
}

// writeTokens writes the static token file: token,user,uid,"groups".
func (k *KubeAPIServer) writeTokens(dir string) (string, error) {
	var lines []string
	for user, groups := range userGroups {
		buf := make([]byte, 16)
		if _, err := rand.Read(buf); err != nil {
			return "", err
		}
		k.tokens[user] = hex.EncodeToString(buf)
		lines = append(lines, fmt.Sprintf("%s,%s,%s,%q", k.tokens[user], user, user, groups))
	}
	path := filepath.Join(dir, "tokens.csv")
	return path, os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600)
}

// Token is the bearer token of one of the Users.
func (k *KubeAPIServer) Token(user string) string { return k.tokens[user] }

// Start (re)starts the server with the same arguments and waits until it
// is ready.
func (k *KubeAPIServer) Start() error {
	p, err := k.bed.Start(k.Host.NS, "kube-apiserver-"+k.Host.Name, k.args...)
	if err != nil {
		return fmt.Errorf("testbed: start kube-apiserver: %w", err)
	}
	p.Kill = true
	k.Proc = p
	return k.waitReady(readyTimeout)
}

// Stop kills the server (SIGKILL), as a crash or a lost control-plane
// host would: the harsher case for clients, whose watches end without
// a goodbye. (On SIGTERM kube-apiserver drains for longer than the 5 s a
// test should wait.)
func (k *KubeAPIServer) Stop() error {
	k.Proc.Signal(syscall.SIGKILL)
	k.Proc.Wait(30 * time.Second) //nolint:errcheck // killed: its exit status says so
	if !k.Proc.Exited() {
		return errors.New("testbed: kube-apiserver did not die on SIGKILL")
	}
	return nil
}

// waitReady polls /readyz (every 100 ms: it is the readiness signal the
// server offers) until it answers ok, the process exits or timeout passes.
func (k *KubeAPIServer) waitReady(timeout time.Duration) error {
	client, err := k.httpClient(AdminUser)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for {
		resp, err := client.Get(k.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("/readyz: %s", resp.Status)
		}
		switch {
		case k.Proc.Exited():
			return fmt.Errorf("kube-apiserver exited before it was ready: %s", Tail(k.Proc.Log, 30))
		case time.Now().After(deadline):
			return fmt.Errorf("kube-apiserver not ready after %v: %w%s", timeout, err, Tail(k.Proc.Log, 30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (k *KubeAPIServer) httpClient(user string) (*http.Client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(k.CA) {
		return nil, errors.New("testbed: bad CA PEM")
	}
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext:     k.dial,
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: bearer{tr, k.tokens[user]}}, nil
}

type bearer struct {
	rt    http.RoundTripper
	token string
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.rt.RoundTrip(r)
}

// dial opens connections from inside the server's host namespace, so the
// test process reaches the underlay address.
func (k *KubeAPIServer) dial(ctx context.Context, _, addr string) (net.Conn, error) {
	return k.Host.Dial(ctx, addr)
}

// RESTConfig is a client config for the test process, as user.
func (k *KubeAPIServer) RESTConfig(user string) *rest.Config {
	return &rest.Config{
		Host:            k.URL,
		BearerToken:     k.tokens[user],
		TLSClientConfig: rest.TLSClientConfig{CAData: k.CA},
		Dial:            k.dial,
		UserAgent:       "flannelu-test",
		QPS:             50,
		Burst:           100,
	}
}

// Clientset is a client for the test process, as user.
func (k *KubeAPIServer) Clientset(user string) (*kubernetes.Clientset, error) {
	return kubernetes.NewForConfig(k.RESTConfig(user))
}

// WriteKubeconfig writes a kubeconfig for user, for a process running in
// any host of the bed (it reaches the server over the underlay).
func (k *KubeAPIServer) WriteKubeconfig(path, user string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["test"] = &clientcmdapi.Cluster{Server: k.URL, CertificateAuthorityData: k.CA}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: k.tokens[user]}
	cfg.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: user}
	cfg.CurrentContext = "test"
	return clientcmd.WriteToFile(*cfg, path)
}
