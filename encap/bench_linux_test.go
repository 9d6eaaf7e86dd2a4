package encap

import (
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/flannelu/flannelu/testbed"
)

const benchPayload = 1400 // a full-size inner packet

func BenchmarkRoundTrip(b *testing.B) {
	for _, gso := range []bool{false, true} {
		for _, batch := range []int{1, 8, 64} {
			name := "batch=" + strconv.Itoa(batch)
			if gso {
				name += "/gso"
			}
			b.Run(name, func(b *testing.B) {
				_, a, r := pair(b)
				if g, _ := a.Offloads(); gso && !g {
					b.Skip("kernel has no UDP GSO")
				}
				a.gso.Store(gso)
				sizes := make([]int, batch)
				for i := range sizes {
					sizes[i] = benchPayload
				}
				out, in := outgoing(hostB, sizes), incoming(batch, 2048)
				b.ReportAllocs()
				start := time.Now()
				for b.Loop() {
					if n, err := a.WriteBatch(out); n != batch || err != nil {
						b.Fatalf("WriteBatch = %d, %v", n, err)
					}
					for got := 0; got < batch; {
						n, err := r.ReadBatch(in)
						if err != nil {
							b.Fatal(err)
						}
						got += n
					}
				}
				b.ReportMetric(float64(b.N*batch)/time.Since(start).Seconds(), "pkts/s")
			})
		}
	}
}

// BenchmarkXNetIPv4 is the same round trip through golang.org/x/net/ipv4's
// PacketConn batches, the library this package measured itself against.
func BenchmarkXNetIPv4(b *testing.B) {
	for _, batch := range []int{1, 8, 64} {
		b.Run("batch="+strconv.Itoa(batch), func(b *testing.B) {
			ns := testbed.Namespace(b, "encap")
			ns.IP(b, "addr", "add", "192.0.2.1/32", "dev", "lo")
			ns.IP(b, "addr", "add", "192.0.2.2/32", "dev", "lo")
			var ca, cb *net.UDPConn
			var errA, errB error
			ns.In(b, func() {
				ca, errA = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(hostA))
				cb, errB = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(hostB))
			})
			if errA != nil || errB != nil {
				b.Fatal(errA, errB)
			}
			defer ca.Close()
			defer cb.Close()
			cb.SetReadBuffer(DefaultSocketBuffer)
			pa, pb := ipv4.NewPacketConn(ca), ipv4.NewPacketConn(cb)
			dst := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(hostB.String()))
			out, in := make([]ipv4.Message, batch), make([]ipv4.Message, batch)
			for i := range out {
				out[i] = ipv4.Message{Buffers: [][]byte{make([]byte, benchPayload)}, Addr: dst}
				in[i] = ipv4.Message{Buffers: [][]byte{make([]byte, 2048)}}
			}
			b.ReportAllocs()
			start := time.Now()
			for b.Loop() {
				for sent := 0; sent < batch; {
					n, err := pa.WriteBatch(out[sent:], 0)
					if err != nil {
						b.Fatal(err)
					}
					sent += n
				}
				for got := 0; got < batch; {
					n, err := pb.ReadBatch(in, 0)
					if err != nil {
						b.Fatal(err)
					}
					got += n
				}
			}
			b.ReportMetric(float64(b.N*batch)/time.Since(start).Seconds(), "pkts/s")
		})
	}
}
