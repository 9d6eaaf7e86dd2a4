package testbed

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// Tmpfs mounts a tmpfs of size (mount's syntax: "16k") on a new
// temporary directory and unmounts it when the test ends: a small disk
// of its own that a test can fill. Root only (see RequireRoot).
func Tmpfs(tb testing.TB, size string) string {
	tb.Helper()
	RequireRoot(tb)
	dir := tb.TempDir()
	if _, err := run("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0755", "tmpfs", dir); err != nil {
		tb.Fatal(err)
	}
	// Registered after TempDir's own cleanup, so it runs first.
	tb.Cleanup(func() {
		if _, err := run("umount", dir); err != nil {
			// A process the test started may still hold a file open.
			run("umount", "-l", dir) //nolint:errcheck // best effort
		}
	})
	return dir
}

// FillDisk writes zeros to a new file in dir until its filesystem is full
// and returns the file's path; removing it frees the space again.
func FillDisk(tb testing.TB, dir string) string {
	tb.Helper()
	path := filepath.Join(dir, "fill")
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				tb.Fatalf("fill %s: %v", dir, err)
			}
			return path
		}
	}
}
