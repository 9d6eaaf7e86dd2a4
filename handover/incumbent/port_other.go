//go:build !linux

package incumbent

func portHeld(string) bool { return false }

func udpPortHeld(string) bool { return false }
