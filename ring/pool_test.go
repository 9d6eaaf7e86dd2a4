package ring

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"
)

func TestPoolShapeAndDisjointBuffers(t *testing.T) {
	p, err := NewPool(3, 4, 100)
	if err != nil {
		t.Fatal(err)
	}
	if p.Len() != 3 || p.Free() != 3 {
		t.Fatalf("Len %d Free %d, want 3 3", p.Len(), p.Free())
	}
	seen := map[*byte]bool{}
	var got []*Batch
	for i := 0; i < 3; i++ {
		b, ok := p.TryGet()
		if !ok {
			t.Fatalf("TryGet %d failed", i)
		}
		if len(b.Bufs) != 4 || len(b.Sizes) != 4 || len(b.Addrs) != 4 || b.N != 0 {
			t.Fatalf("batch shape %d/%d/%d N=%d", len(b.Bufs), len(b.Sizes), len(b.Addrs), b.N)
		}
		for _, buf := range b.Bufs {
			if len(buf) != 100 || cap(buf) != 100 {
				t.Fatalf("buffer len %d cap %d, want 100 100", len(buf), cap(buf))
			}
			if seen[&buf[0]] {
				t.Fatal("two buffers share memory")
			}
			seen[&buf[0]] = true
			buf[99] = 0xff // writing the last byte must not touch a neighbour
		}
		got = append(got, b)
	}
	for _, b := range got {
		for _, buf := range b.Bufs {
			if buf[0] != 0 {
				t.Fatal("a buffer's last byte overlapped the next buffer")
			}
		}
	}
	if _, ok := p.TryGet(); ok {
		t.Fatal("TryGet succeeded with every batch in use")
	}
	got[0].N = 2
	p.Put(got[0])
	b, ok := p.TryGet()
	if !ok || b != got[0] || b.N != 0 {
		t.Fatalf("after Put: TryGet = %p,%v N=%d; want the same batch, emptied", b, ok, b.N)
	}
}

func TestPoolBadArgs(t *testing.T) {
	for _, a := range [][3]int{{0, 1, 1}, {1, 0, 1}, {1, 1, 0}, {-1, 1, 1}, {1 << 21, 1, 1}, {1 << 20, 1 << 16, 1 << 20}} {
		if _, err := NewPool(a[0], a[1], a[2]); err == nil {
			t.Errorf("NewPool%v succeeded", a)
		}
	}
}

func TestPoolDoublePutPanics(t *testing.T) {
	p, _ := NewPool(2, 1, 8)
	b, _ := p.TryGet()
	p.Put(b)
	defer func() {
		if recover() == nil {
			t.Fatal("second Put of the same batch did not panic")
		}
	}()
	p.Put(b)
}

func TestPoolGetWaitsAndClose(t *testing.T) {
	p, _ := NewPool(1, 1, 8)
	b, err := p.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := p.Get(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Get with no free batch = %v, want deadline exceeded", err)
	}
	got := make(chan *Batch)
	go func() {
		b, _ := p.Get(context.Background())
		got <- b
	}()
	time.Sleep(10 * time.Millisecond)
	p.Put(b)
	select {
	case b2 := <-got:
		if b2 != b {
			t.Fatal("a waiting Get got a different batch")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Put did not wake a waiting Get")
	}
	errc := make(chan error)
	go func() { _, err := p.Get(context.Background()); errc <- err }()
	time.Sleep(10 * time.Millisecond)
	p.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close = %v, want ErrClosed", err)
	}
}

// TestPoolPipeline is the forwarder's pattern: a reader fills batches and
// pushes them through an SPSC to a writer, which returns them to the pool.
// It checks every packet arrives intact and that the steady state
// allocates nothing.
func TestPoolPipeline(t *testing.T) {
	const batches, batchLen, total = 4, 8, 80_000
	p, _ := NewPool(batches, batchLen, 64)
	full := NewSPSC[*Batch](batches)
	peer := netip.MustParseAddrPort("192.0.2.2:8285")
	go func() {
		ctx := context.Background()
		seq := 0
		for seq < total {
			b, err := p.Get(ctx)
			if err != nil {
				panic(err)
			}
			for b.N < len(b.Bufs) && seq < total {
				buf := b.Bufs[b.N]
				buf[0], buf[1], buf[2] = byte(seq), byte(seq>>8), byte(seq>>16)
				b.Sizes[b.N] = 3
				b.Addrs[b.N] = peer
				b.N++
				seq++
			}
			if err := full.Push(ctx, b); err != nil {
				panic(err)
			}
		}
		full.Close()
	}()
	want := 0
	for {
		b, ok := full.Pop()
		if !ok {
			break
		}
		for i := 0; i < b.N; i++ {
			buf := b.Bufs[i][:b.Sizes[i]]
			if got := int(buf[0]) | int(buf[1])<<8 | int(buf[2])<<16; got != want || b.Addrs[i] != peer {
				t.Fatalf("packet %d arrived as %d from %v", want, got, b.Addrs[i])
			}
			want++
		}
		p.Put(b)
	}
	if want != total {
		t.Fatalf("received %d packets, want %d", want, total)
	}
	if p.Free() != batches {
		t.Fatalf("%d batches back in the pool, want %d", p.Free(), batches)
	}

	allocs := testing.AllocsPerRun(1000, func() {
		b, _ := p.TryGet()
		b.N = 1
		full.TryPush(b) // a closed ring still works for the Try calls
		b2, _ := full.TryPop()
		p.Put(b2)
	})
	if allocs != 0 {
		t.Fatalf("a Get/push/pop/Put cycle allocates %.1f times, want 0", allocs)
	}
}
