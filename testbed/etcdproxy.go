package testbed

import (
	"context"
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// EtcdProxy stands between one daemon and etcd, in the control-plane
// host's namespace, and counts what the daemon asks: every gRPC call opens
// an HTTP/2 stream with a HEADERS frame from the client (etcd's clients
// speak h2c), so HEADERS frames are calls. It can also hold the daemon's
// traffic (Pause) and drop its connections (Cut): the daemon's watch then
// resumes from a revision compacted away meanwhile, as after a network
// partition that outlived etcd's compaction.
type EtcdProxy struct {
	ln     net.Listener
	Addr   string // host:port the daemon is given
	target string
	ns     NS
	calls  atomic.Int64

	mu     sync.Mutex
	paused chan struct{} // closed when not paused
	conns  map[net.Conn]struct{}
}

// NewEtcdProxy listens on h's underlay address at port and forwards to
// target (etcd's client address), dialled from h's namespace. Close
// stops it.
func NewEtcdProxy(h *Host, port int, target string) (*EtcdProxy, error) {
	p := &EtcdProxy{Addr: ListenAddr(h.Addr, port), target: target, ns: h.NS,
		conns: map[net.Conn]struct{}{}, paused: make(chan struct{})}
	close(p.paused)
	err := h.Do(func() error {
		var err error
		p.ln, err = net.Listen("tcp", p.Addr)
		return err
	})
	if err != nil {
		return nil, err
	}
	go p.accept()
	return p, nil
}

func (p *EtcdProxy) Close() { p.ln.Close(); p.Cut() }

func (p *EtcdProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.serve(c)
	}
}

func (p *EtcdProxy) gate() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.paused
}

// Pause holds every byte both ways until Resume.
func (p *EtcdProxy) Pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = make(chan struct{})
}

func (p *EtcdProxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.paused:
	default:
		close(p.paused)
	}
}

// Cut closes every connection: the daemon's client reconnects.
func (p *EtcdProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

func (p *EtcdProxy) track(c net.Conn, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
}

func (p *EtcdProxy) serve(client net.Conn) {
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
	go func() { p.copy(server, client, true); done <- struct{}{} }()
	go func() { p.copy(client, server, false); done <- struct{}{} }()
	<-done
}

// copy forwards src to dst, holding while paused; from the client it
// also parses the HTTP/2 frames to count calls.
func (p *EtcdProxy) copy(dst, src net.Conn, fromClient bool) {
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

// Calls is how many gRPC calls the daemon made through the proxy.
func (p *EtcdProxy) Calls() int64 { return p.calls.Load() }
