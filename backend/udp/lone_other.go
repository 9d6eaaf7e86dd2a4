//go:build !linux

package udp

import "github.com/flannelu/flannelu/encap"

// loneAddr and the lone-packet system calls are Linux's (lone_linux.go);
// elsewhere every packet takes the batch path.
type loneAddr struct{}

func (in *inside) sendLone(*encap.Message) bool { return false }

func (o *outside) writeLone() bool { return false }
