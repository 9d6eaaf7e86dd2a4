//go:build !linux

package incumbent

func tunHeld(string) bool { return false }
