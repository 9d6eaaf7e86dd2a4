package offload

import (
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
	equalBytes(t, "encoded", out, b)
}

func TestVirtioNetHdrShortBuffer(t *testing.T) {
	var h VirtioNetHdr
	if err := h.Decode(make([]byte, 9)); !errors.Is(err, ErrShortBuffer) {
		t.Fatalf("Decode of 9 bytes: %v, want ErrShortBuffer", err)
	}
	if err := h.Encode(make([]byte, 9)); !errors.Is(err, ErrShortBuffer) {
		t.Fatalf("Encode into 9 bytes: %v, want ErrShortBuffer", err)
	}
}
