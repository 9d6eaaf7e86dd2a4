package encap

import (
	"bytes"
	"testing"

	"github.com/flannelu/flannelu/testbed"
)

// TestGROReceivesARunInOneMessage sends a GSO run of ten datagrams and
// reads it on a GRO socket: fewer messages than datagrams arrive, and
// Datagram(i) gives back every datagram with its bytes, in order.
func TestGROReceivesARunInOneMessage(t *testing.T) {
	ns := testbed.Namespace(t, "encap")
	ns.IP(t, "addr", "add", hostA.Addr().String()+"/32", "dev", "lo")
	ns.IP(t, "addr", "add", hostB.Addr().String()+"/32", "dev", "lo")
	a := listenIn(t, ns, Config{Addr: hostA})
	b := listenIn(t, ns, Config{Addr: hostB, GRO: true})
	if _, gro := b.Offloads(); !gro {
		t.Fatal("UDP_GRO was refused; kernel 5.0+ has it")
	}
	sizes := []int{1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 500}
	sent := outgoing(hostB, sizes)
	if n, err := a.WriteBatch(sent); n != len(sent) || err != nil {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	var got [][]byte
	coalesced := false
	for len(got) < len(sent) {
		msgs := readAll(t, b, 1, 65536)
		m := &msgs[0]
		if m.Addr != hostA {
			t.Fatalf("message from %v, want %v", m.Addr, hostA)
		}
		coalesced = coalesced || m.GSOSize > 0
		for i := 0; ; i++ {
			d, ok := m.Datagram(i)
			if !ok {
				break
			}
			got = append(got, d)
		}
	}
	if !coalesced {
		t.Error("no message carried a GRO run (GSOSize 0 on every read)")
	}
	if len(got) != len(sent) {
		t.Fatalf("%d datagrams, want %d", len(got), len(sent))
	}
	for i := range sent {
		if !bytes.Equal(got[i], sent[i].Buf[:sent[i].N]) {
			t.Errorf("datagram %d: %d bytes, want %d bytes of payload %d", i, len(got[i]), sent[i].N, i)
		}
	}
}

func TestDatagramOfPlainMessage(t *testing.T) {
	m := Message{Buf: []byte("abcdef"), N: 4}
	if d, ok := m.Datagram(0); !ok || string(d) != "abcd" {
		t.Fatalf("Datagram(0) = %q, %v", d, ok)
	}
	if _, ok := m.Datagram(1); ok {
		t.Fatal("a plain message has a second datagram")
	}
	m = Message{Buf: []byte("aabbc"), N: 5, GSOSize: 2}
	var parts []string
	for i := 0; ; i++ {
		d, ok := m.Datagram(i)
		if !ok {
			break
		}
		parts = append(parts, string(d))
	}
	if len(parts) != 3 || parts[0] != "aa" || parts[1] != "bb" || parts[2] != "c" {
		t.Fatalf("GRO parts = %q, want [aa bb c]", parts)
	}
}

func FuzzGROSize(f *testing.F) {
	f.Add([]byte{})
	f.Add(make([]byte, groCmsgSpace))
	f.Fuzz(func(t *testing.T, oob []byte) {
		if n := groSize(oob); n < 0 && n != int(int32(n)) {
			t.Fatalf("groSize = %d", n)
		}
	})
}
