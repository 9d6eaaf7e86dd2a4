package packet

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

func TestVirtioNetHdrLayout(t *testing.T) {
	// struct virtio_net_hdr { u8 flags; u8 gso_type; u16 hdr_len, gso_size,
	// csum_start, csum_offset; } in host order on the legacy TUN interface.
	b := []byte{1, 4, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.NativeEndian.PutUint16(b[2:], 74)
	binary.NativeEndian.PutUint16(b[4:], 1428)
	binary.NativeEndian.PutUint16(b[6:], 40)
	binary.NativeEndian.PutUint16(b[8:], 16)
	var h VirtioNetHdr
	if err := h.Decode(b); err != nil {
		t.Fatal(err)
	}
	want := VirtioNetHdr{Flags: FlagNeedsCsum, GSOType: GSOTCPv6, HdrLen: 74, GSOSize: 1428, CsumStart: 40, CsumOffset: 16}
	if h != want {
		t.Fatalf("decoded %v, want %v", h, want)
	}
	out := make([]byte, VirtioNetHdrLen)
	if err := want.Encode(out); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, b) {
		t.Fatalf("encoded % x, want % x", out, b)
	}
}

func TestVirtioNetHdrShortBuffer(t *testing.T) {
	var h VirtioNetHdr
	if err := h.Decode(make([]byte, 9)); !errors.Is(err, ErrShortVirtioNetHdr) {
		t.Fatalf("Decode of 9 bytes: %v, want ErrShortVirtioNetHdr", err)
	}
	if err := h.Encode(make([]byte, 9)); !errors.Is(err, ErrShortVirtioNetHdr) {
		t.Fatalf("Encode into 9 bytes: %v, want ErrShortVirtioNetHdr", err)
	}
}

func FuzzVirtioNetHdr(f *testing.F) {
	f.Add([]byte{1, 4, 74, 0, 148, 5, 40, 0, 16, 0})
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff})
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		var h VirtioNetHdr
		err := h.Decode(b)
		if (err != nil) != (len(b) < VirtioNetHdrLen) {
			t.Fatalf("Decode of %d bytes: %v", len(b), err)
		}
		if err != nil {
			return
		}
		out := make([]byte, VirtioNetHdrLen)
		if err := h.Encode(out); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, b[:VirtioNetHdrLen]) {
			t.Fatalf("round trip %x -> %v -> %x", b[:VirtioNetHdrLen], h, out)
		}
	})
}
