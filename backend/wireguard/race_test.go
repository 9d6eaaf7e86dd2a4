//go:build race

package wireguard

// raceEnabled: the race detector makes sync.Pool drop items at random, and
// wireguard-go takes its buffers and elements from sync.Pools.
const raceEnabled = true
