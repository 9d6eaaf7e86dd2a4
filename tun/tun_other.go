//go:build !linux

package tun

import (
	"errors"
	"os"
)

// ErrUnsupported is what Open returns on systems other than Linux.
var ErrUnsupported = errors.New("tun: TUN devices are only supported on Linux")

// Device is an open TUN interface; on this system none can be opened.
type Device struct{}

// Queue is one queue of a Device.
type Queue struct{}

// Open fails: flannelu's TUN device is Linux's (IFF_TUN, IFF_VNET_HDR,
// multiqueue).
func Open(Config) (*Device, error) { return nil, ErrUnsupported }

// The methods below exist so that portable callers build; there is never a
// Device or Queue to call them on.

func (d *Device) Name() string      { return "" }
func (d *Device) Queues() []*Queue  { return nil }
func (d *Device) Offloads() Offload { return 0 }
func (d *Device) Close() error      { return nil }

func (q *Queue) BatchSize() int                         { return DefaultBatchSize }
func (q *Queue) Read([][]byte, []int, int) (int, error) { return 0, ErrUnsupported }
func (q *Queue) Write([][]byte, int) (int, error)       { return 0, ErrUnsupported }
func (q *Queue) WriteParts([][][]byte) (int, error)     { return 0, ErrUnsupported }

// Adopt fails: see Open.
func Adopt(Config, []*os.File) (*Device, error) { return nil, ErrUnsupported }

func (d *Device) DupFiles() ([]*os.File, error) { return nil, ErrUnsupported }
func (d *Device) VnetHdr() bool                 { return false }
func (d *Device) StopReads() error              { return ErrUnsupported }

// PersistFile fails: there is no TUN device here.
func PersistFile(*os.File) error { return ErrUnsupported }
