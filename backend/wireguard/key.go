package wireguard

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/flannelu/flannelu/internal/atomicfile"
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
	// Written whole or not at all (atomicfile), so that no later start
	// finds a partial key.
	if err := atomicfile.WriteFile(path, []byte(key.String()), keyFileMode); err != nil {
		return key, false, fmt.Errorf("wireguard: key file: %w", err)
	}
	return key, true, nil
}
