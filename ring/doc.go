// Package ring hands values between goroutines through bounded lock-free
// queues: the pipeline stages of the udp backend's forwarder, and the
// forwarder and the packet tracer.
//
// SPSC is the fastest queue, for exactly one producer and one consumer
// goroutine. MPMC (Dmitry Vyukov's bounded queue) allows any number of
// each, at the cost of a compare-and-swap per operation. Pool recycles a
// fixed set of packet batches through an SPSC free ring so that a
// pipeline allocates nothing after construction.
//
// Ownership: a value pushed into a ring belongs to the consumer from the
// moment the push succeeds. When T is a pointer or a slice, the producer
// must not read or write what it points to until the value comes back to
// it (for example through Pool's free ring).
//
// The blocking helpers (Push, Pop, PopContext) park a goroutine on a
// channel only when the ring is full or empty; the fast path of the other
// side is one atomic load of a word that is written only by a parking
// goroutine.
package ring
