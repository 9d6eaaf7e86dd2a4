//go:build race

package metrics

// raceEnabled: the race detector makes sync.Pool drop items at random.
const raceEnabled = true
