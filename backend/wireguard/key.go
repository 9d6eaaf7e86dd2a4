package wireguard

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// KeyFileEnv names the key file instead of the default, as in flanneld.
const KeyFileEnv = "WIREGUARD_KEY_FILE"

// DefaultKeyFile is flanneld's key file, beside the default subnet.env.
const DefaultKeyFile = "/run/flannel/wgkey"

// keyFileMode is flanneld's: readable by root only.
const keyFileMode = 0o400

// LoadKey returns the private key in path (base64, as flanneld and
// `wg genkey` write it; surrounding white space is ignored), creating the
// file with a new key when there is none, or when it is empty (a writer
// that died before writing: flanneld creates the file, then writes it).
// A file that holds something else is an error, never overwritten: it may
// be an operator's key. created reports a new key.
func LoadKey(path string) (key wgtypes.Key, created bool, err error) {
	data, rerr := os.ReadFile(path)
	switch {
	case errors.Is(rerr, fs.ErrNotExist):
	case rerr != nil:
		return key, false, fmt.Errorf("wireguard: key file: %w", rerr)
	case len(bytes.TrimSpace(data)) > 0:
		key, err = wgtypes.ParseKey(string(bytes.TrimSpace(data)))
		if err != nil {
			return key, false, fmt.Errorf("wireguard: key file %s does not hold a WireGuard private key (base64, as `wg genkey` prints): remove it to have a new key made", path)
		}
		return key, false, nil
	}
	if key, err = wgtypes.GeneratePrivateKey(); err != nil {
		return key, false, fmt.Errorf("wireguard: generate a private key: %w", err)
	}
	if err := writeKey(path, key, rerr == nil); err != nil { // rerr == nil: an empty file
		return key, false, fmt.Errorf("wireguard: key file: %w", err)
	}
	return key, true, nil
}

// writeKey writes key to path atomically with mode 0400: a temporary file
// in the same directory (made with its parents, 0755), written and synced,
// then linked to path, which fails if path appeared meanwhile (another
// process made its key first: LoadKey's caller then sees an error rather
// than two keys), or renamed over it when replace (an empty file).
func writeKey(path string, key wgtypes.Key, replace bool) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a link: the temporary name only
	if err = f.Chmod(keyFileMode); err == nil {
		_, err = f.WriteString(key.String())
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if replace {
		err = os.Rename(tmp, path)
	} else {
		err = os.Link(tmp, path)
	}
	if err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync() // best effort: makes the new name durable
		d.Close()
	}
	return nil
}
