//go:build !linux

package incumbent

func portHeld(string) bool { return false }
