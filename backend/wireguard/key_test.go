package wireguard

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
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
