package wireguard

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/flannelu/flannelu/testbed"
)

func mustKey(t *testing.T, s string) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.ParseKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestLoadKeyCreatesOnceAndKeeps: a missing file (and directory) gets a
// new key, mode 0400 as flanneld writes it; later loads return the same.
func TestLoadKeyCreatesOnceAndKeeps(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "flannel", "wgkey")
	k1, created, err := LoadKey(path)
	if err != nil || !created {
		t.Fatalf("first load: created %v, %v", created, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o400 {
		t.Fatalf("key file: %v, mode %v", err, fi.Mode())
	}
	data, _ := os.ReadFile(path)
	if string(data) != k1.String() {
		t.Errorf("file holds %q, want the base64 key %q (flanneld's form)", data, k1)
	}
	k2, created, err := LoadKey(path)
	if err != nil || created || k2 != k1 {
		t.Fatalf("second load: %v created %v, %v; want the same key", k2, created, err)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
}

func TestLoadKeyReadsWgGenkeyFiles(t *testing.T) {
	want, _ := wgtypes.GeneratePrivateKey()
	path := filepath.Join(t.TempDir(), "wgkey")
	os.WriteFile(path, []byte(want.String()+"\n"), 0o400) // `wg genkey > wgkey` ends with a newline
	got, created, err := LoadKey(path)
	if err != nil || created || got != want {
		t.Fatalf("%v created %v, %v", got, created, err)
	}
}

// An empty file is a writer that died before writing: it is replaced. A
// file with anything else is never overwritten.
func TestLoadKeyEmptyAndGarbage(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	if _, created, err := LoadKey(empty); err != nil || !created {
		t.Fatalf("empty file: created %v, %v", created, err)
	}
	if data, _ := os.ReadFile(empty); len(data) != 44 {
		t.Errorf("empty file now holds %q", data)
	}
	garbage := filepath.Join(dir, "garbage")
	os.WriteFile(garbage, []byte("not a key"), 0o600)
	if _, _, err := LoadKey(garbage); err == nil || !strings.Contains(err.Error(), "does not hold a WireGuard private key") {
		t.Fatalf("garbage: %v", err)
	}
	if data, _ := os.ReadFile(garbage); string(data) != "not a key" {
		t.Errorf("garbage overwritten: %q", data)
	}
}

// TestLoadKeyFullDisk: on a full filesystem a new key cannot be written;
// LoadKey fails saying so, and leaves neither a partial key nor a
// temporary file; an empty key file (a writer that died) stays as it was.
// The next start on a disk with room writes the key whole.
func TestLoadKeyFullDisk(t *testing.T) {
	dir := testbed.Tmpfs(t, "16k")
	empty := filepath.Join(dir, "empty-wgkey")
	if err := os.WriteFile(empty, nil, 0o400); err != nil {
		t.Fatal(err)
	}
	testbed.FillDisk(t, dir)
	for _, path := range []string{filepath.Join(dir, "wgkey"), empty} {
		if _, _, err := LoadKey(path); !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "wireguard: key file") {
			t.Fatalf("LoadKey(%s) on a full disk: %v, want ENOSPC from the key file's write", path, err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{"empty-wgkey", "fill"}; !slices.Equal(names, want) {
		t.Fatalf("files after the failed writes: %v, want %v", names, want)
	}
	if data, _ := os.ReadFile(empty); len(data) != 0 {
		t.Fatalf("the empty key file now holds %q", data)
	}
	if err := os.Remove(filepath.Join(dir, "fill")); err != nil {
		t.Fatal(err)
	}
	k, created, err := LoadKey(empty)
	if err != nil || !created {
		t.Fatalf("LoadKey with room again: created %v, %v", created, err)
	}
	if again, _, err := LoadKey(empty); err != nil || again != k {
		t.Fatalf("the key written after the full disk does not load back: %v %v", again, err)
	}
}
