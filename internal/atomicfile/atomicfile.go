// Package atomicfile writes the files flannelu owns (subnet.env, which
// flannel's CNI plugin reads for every pod; key files) so that a reader,
// or the next start after a crash or a full disk, finds either the old
// file or the new one, whole, never an empty or partial one.
package atomicfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// WriteFile replaces path with data, mode perm (whatever the umask): it
// creates the missing parent directories (0755), writes a temporary file
// beside path, fsyncs it, renames it over path and fsyncs the directory.
// Every step's error is returned, naming the step; when one fails before
// the rename, the temporary file is removed and path is left as it was.
// A failed directory fsync comes after the rename: path then holds data,
// but a crash may still bring the old file back.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// CreateTemp opens with O_EXCL and mode 0600: nothing else ever wrote
	// to this file, and no one reads it before it is complete.
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	if err := fill(f, data, perm); err != nil {
		return errors.Join(err, os.Remove(f.Name()))
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return errors.Join(err, os.Remove(f.Name()))
	}
	return syncDir(dir)
}

// fill writes data to f, sets its mode, fsyncs and closes it; f is closed
// whatever happens.
func fill(f *os.File, data []byte, perm os.FileMode) error {
	// Write returns an error whenever it wrote less than len(data).
	_, err := f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close %s: %w", f.Name(), cerr)
	}
	return err
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
