package poller

import "time"

// MaxBusyPoll bounds a Poller's SetBusyPoll: past a millisecond a thread
// woken from sleep costs far less than the CPU the polling burns.
const MaxBusyPoll = time.Millisecond
