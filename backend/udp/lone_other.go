//go:build !linux

package udp

import "github.com/flannelu/flannelu/encap"

// The lone-packet system calls are Linux's (lone_linux.go); elsewhere
// every packet takes the batch path.

func (in *inside) sendLone(*encap.Message) bool { return false }

func (o *outside) writeLone() bool { return false }
