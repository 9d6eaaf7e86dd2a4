package encap

// Control runs fn on the socket's descriptor (a socket option set after
// Listen: the wireguard backend's SO_MARK and path-MTU mode), without
// taking it out of Go's netpoller.
func (c *Conn) Control(fn func(fd int) error) error {
	var err error
	if cerr := c.raw.Control(func(fd uintptr) { err = fn(int(fd)) }); cerr != nil {
		return cerr
	}
	return err
}
