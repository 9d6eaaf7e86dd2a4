//go:build linux

package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flannelu/flannelu/testbed"
)

// etcdProxy stands between one daemon and etcd, in the control-plane
// host's namespace, and counts what the daemon asks: every gRPC call opens
// an HTTP/2 stream with a HEADERS frame from the client (etcd's clients
// speak h2c), so HEADERS frames are calls; bytes are counted both ways. It
// can also hold the daemon's traffic (pause) and drop its connections
// (cut), for the compaction measure: the daemon's watch then resumes from
// a revision compacted away meanwhile.
type etcdProxy struct {
	ln      net.Listener
	addr    string // host:port the daemon is given
	target  string
	ns      testbed.NS
	calls   atomic.Int64
	bytesIn atomic.Int64 // daemon -> etcd
	bytesOu atomic.Int64 // etcd -> daemon

	mu     sync.Mutex
	paused chan struct{} // closed when not paused
	conns  map[net.Conn]struct{}
}

func newEtcdProxy(h *testbed.Host, port int, target string) (*etcdProxy, error) {
	p := &etcdProxy{addr: testbed.ListenAddr(h.Addr, port), target: target, ns: h.NS,
		conns: map[net.Conn]struct{}{}, paused: make(chan struct{})}
	close(p.paused)
	err := h.Do(func() error {
		var err error
		p.ln, err = net.Listen("tcp", p.addr)
		return err
	})
	if err != nil {
		return nil, err
	}
	go p.accept()
	return p, nil
}

func (p *etcdProxy) close() { p.ln.Close(); p.cut() }

func (p *etcdProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.serve(c)
	}
}

func (p *etcdProxy) gate() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.paused
}

// pause holds every byte both ways until resume.
func (p *etcdProxy) pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = make(chan struct{})
}

func (p *etcdProxy) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.paused:
	default:
		close(p.paused)
	}
}

// cut closes every connection: the daemon's client reconnects.
func (p *etcdProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

func (p *etcdProxy) track(c net.Conn, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
}

func (p *etcdProxy) serve(client net.Conn) {
	<-p.gate()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	server, err := p.ns.Dial(ctx, p.target)
	cancel()
	if err != nil {
		client.Close()
		return
	}
	p.track(client, true)
	p.track(server, true)
	defer func() {
		p.track(client, false)
		p.track(server, false)
		client.Close()
		server.Close()
	}()
	done := make(chan struct{}, 2)
	go func() { p.copy(server, client, &p.bytesIn, true); done <- struct{}{} }()
	go func() { p.copy(client, server, &p.bytesOu, false); done <- struct{}{} }()
	<-done
}

// copy forwards src to dst, holding while paused; from the client it
// also parses the HTTP/2 frames to count calls.
func (p *etcdProxy) copy(dst, src net.Conn, n *atomic.Int64, fromClient bool) {
	defer dst.Close()
	var frames h2Counter
	buf := make([]byte, 64<<10)
	for {
		k, err := src.Read(buf)
		if k > 0 {
			<-p.gate()
			if fromClient {
				p.calls.Add(frames.feed(buf[:k]))
			}
			n.Add(int64(k))
			if _, werr := dst.Write(buf[:k]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// h2Counter finds the HTTP/2 frame headers in a client's byte stream
// (after the 24-byte connection preface) and counts HEADERS frames.
type h2Counter struct {
	preface int    // preface bytes still to skip
	hdr     []byte // a frame header read in part
	skip    int    // payload bytes of the current frame still to skip
	started bool
}

func (h *h2Counter) feed(b []byte) (headers int64) {
	if !h.started {
		h.started, h.preface = true, 24
	}
	for len(b) > 0 {
		switch {
		case h.preface > 0:
			k := min(h.preface, len(b))
			h.preface -= k
			b = b[k:]
		case h.skip > 0:
			k := min(h.skip, len(b))
			h.skip -= k
			b = b[k:]
		default:
			k := min(9-len(h.hdr), len(b))
			h.hdr = append(h.hdr, b[:k]...)
			b = b[k:]
			if len(h.hdr) < 9 {
				return headers
			}
			length := int(binary.BigEndian.Uint32(append([]byte{0}, h.hdr[:3]...)))
			if h.hdr[3] == 0x1 { // HEADERS
				headers++
			}
			h.skip, h.hdr = length, h.hdr[:0]
		}
	}
	return headers
}

// auditPolicy logs one line per request of a service account (the
// daemons run as flannel's) when the API server receives it: the test
// harness's own requests (admin) and the API server's are not logged.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["ResponseStarted", "ResponseComplete", "Panic"]
rules:
- level: Metadata
  userGroups: ["system:serviceaccounts"]
- level: None
`

// auditLog reads the API server's audit log as it grows.
type auditLog struct {
	path string
	mu   sync.Mutex
	off  int64
	reqs []auditReq
}

type auditReq struct {
	at          time.Time
	ip, verb    string
	resource    string
	subresource string
}

type auditEvent struct {
	Verb      string   `json:"verb"`
	SourceIPs []string `json:"sourceIPs"`
	ObjectRef struct {
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
	} `json:"objectRef"`
	RequestReceived time.Time `json:"requestReceivedTimestamp"`
}

// read takes in the lines written since the last read.
func (a *auditLog) read() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	f, err := os.Open(a.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Seek(a.off, io.SeekStart); err != nil {
		return err
	}
	r := bufio.NewReaderSize(f, 1<<20)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return nil // a partial last line is read again next time
		}
		a.off += int64(len(line))
		var ev auditEvent
		if json.Unmarshal(line, &ev) != nil || len(ev.SourceIPs) == 0 {
			continue
		}
		a.reqs = append(a.reqs, auditReq{at: ev.RequestReceived, ip: ev.SourceIPs[0], verb: ev.Verb,
			resource: ev.ObjectRef.Resource, subresource: ev.ObjectRef.Subresource})
	}
}

// count returns the requests from ip received in [from, to), by verb.
func (a *auditLog) count(ip string, from, to time.Time) map[string]int {
	a.read() //nolint:errcheck // counted from what could be read
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]int{}
	for _, r := range a.reqs {
		if r.ip == ip && !r.at.Before(from) && r.at.Before(to) {
			verb := r.verb
			if r.subresource != "" {
				verb += " " + r.resource + "/" + r.subresource
			}
			out[verb]++
		}
	}
	return out
}

func total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
