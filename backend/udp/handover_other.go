//go:build !linux

package udp

import "errors"

var errNotLinux = errors.New("udp backend: TUN devices are only supported on Linux")

// HandOff fails: see configureDevice.
func (b *Backend) HandOff() (*Inherited, error) { return nil, errNotLinux }

func (b *Backend) adopt(h *Inherited) error {
	h.Close()
	return errNotLinux
}

func (b *Backend) openDevice(int) error { return errNotLinux }

// KeepDevice does nothing: there is no device.
func (b *Backend) KeepDevice(bool) {}

func (b *Backend) retire() {}
