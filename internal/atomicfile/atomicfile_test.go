package atomicfile_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/flannelu/flannelu/internal/atomicfile"
	"github.com/flannelu/flannelu/testbed"
)

func TestWriteFileReplaces(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "run", "flannel", "subnet.env")
	if err := atomicfile.WriteFile(path, []byte("first\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := atomicfile.WriteFile(path, []byte("second\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil || string(got) != "second\n" {
		t.Fatalf("content %q, %v; want %q", got, err, "second\n")
	}
	// The mode is perm exactly, whatever the umask (a key file's 0400).
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o400 {
		t.Fatalf("mode %v, want 0400", st.Mode().Perm())
	}
	if st, _ := os.Stat(filepath.Dir(path)); st.Mode().Perm() != 0o755 {
		t.Fatalf("created directory mode %v, want 0755", st.Mode().Perm())
	}
	assertFiles(t, filepath.Dir(path), "subnet.env")
}

// TestWriteFileFullDisk is issue 22's first case at its root: on a full
// filesystem the write fails with ENOSPC, and the old file stays whole
// (it was replaced by an empty one while the error was dropped).
func TestWriteFileFullDisk(t *testing.T) {
	dir := testbed.Tmpfs(t, "16k")
	path := filepath.Join(dir, "subnet.env")
	old := []byte("FLANNEL_NETWORK=198.18.0.0/16\nFLANNEL_SUBNET=198.18.40.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n")
	if err := atomicfile.WriteFile(path, old, 0o644); err != nil {
		t.Fatal(err)
	}
	testbed.FillDisk(t, dir)
	err := atomicfile.WriteFile(path, []byte("FLANNEL_NETWORK=198.18.0.0/16\nFLANNEL_SUBNET=198.18.41.1/24\n"), 0o644)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("WriteFile on a full disk: %v, want ENOSPC", err)
	}
	if got, _ := os.ReadFile(path); string(got) != string(old) {
		t.Fatalf("after the failed write the file holds %q, want the old %q", got, old)
	}
	assertFiles(t, dir, "fill", "subnet.env")
}

// A rename that fails (path is a non-empty directory) leaves no temporary
// file and path untouched.
func TestWriteFileRenameFails(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "subnet.env")
	if err := os.MkdirAll(filepath.Join(path, "keep"), 0o755); err != nil {
		t.Fatal(err)
	}
	err := atomicfile.WriteFile(path, []byte("x"), 0o644)
	var le *os.LinkError
	if !errors.As(err, &le) || le.Op != "rename" {
		t.Fatalf("WriteFile over a directory: %v, want a rename error", err)
	}
	assertFiles(t, dir, "subnet.env")
	assertFiles(t, path, "keep")
}

func TestWriteFileParentIsAFile(t *testing.T) {
	dir := t.TempDir()
	parent := filepath.Join(dir, "flannel")
	if err := os.WriteFile(parent, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := atomicfile.WriteFile(filepath.Join(parent, "subnet.env"), []byte("x"), 0o644); !errors.Is(err, syscall.ENOTDIR) {
		t.Fatalf("WriteFile under a file: %v, want ENOTDIR", err)
	}
	assertFiles(t, dir, "flannel")
}

// assertFiles fails t unless dir holds exactly names (no temporary file
// left behind).
func assertFiles(t *testing.T, dir string, names ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if !slices.Equal(got, names) {
		t.Fatalf("%s holds %v, want %v", dir, got, names)
	}
}
