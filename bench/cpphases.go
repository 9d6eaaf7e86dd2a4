//go:build linux

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/flannelu/flannelu/testbed"
)

// paced runs do for each peer, spread evenly over d (a load generator's
// pacing: request i leaves at start + i*d/len), each in a goroutine of its
// own so that a slow answer does not hold the next; it returns when each
// was sent, when each was answered (zero if it failed), and the first
// error.
func paced(peers []testbed.Peer, d time.Duration, do func(context.Context, testbed.Peer) error) (sent, answered []time.Time, err error) {
	sent, answered = make([]time.Time, len(peers)), make([]time.Time, len(peers))
	step := d / time.Duration(max(1, len(peers)))
	ctx, cancel := context.WithTimeout(context.Background(), d+2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	start := time.Now()
	for i, p := range peers {
		time.Sleep(time.Until(start.Add(time.Duration(i) * step)))
		sent[i] = time.Now()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if derr := do(ctx, p); derr != nil {
				mu.Lock()
				if err == nil {
					err = fmt.Errorf("%s: %w", p.Name, derr)
				}
				mu.Unlock()
				return
			}
			answered[i] = time.Now()
		}()
	}
	wg.Wait()
	return sent, answered, err
}

// latencies are one watcher's times from each request (from[i]: when it
// was sent, or when the store answered it) to the kernel (or route table)
// showing it, in milliseconds; lost counts requests never seen before the
// deadline, repeated those seen more than once. The change is looked for
// from the request's sending: a watcher may show it before the store's
// answer reaches the generator (then the latency from the answer is 0).
func latencies(d *cpDaemon, peers []testbed.Peer, sent, from []time.Time, added bool) (ms []float64, lost, repeated int) {
	for i, p := range peers {
		at, n := d.obs.firstAfter(p.Subnet, sent[i], added)
		if at.IsZero() || from[i].IsZero() {
			lost++
			continue
		}
		if n > 1 {
			repeated++
		}
		ms = append(ms, float64(max(0, at.Sub(from[i]).Microseconds()))/1000)
	}
	return ms, lost, repeated
}

func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q * float64(len(sorted)-1))
	return sorted[i]
}

// percentiles are p50, p99 and the maximum of ms, sorted in place.
func percentiles(ms []float64) (p50, p99, top float64) {
	slices.Sort(ms)
	if len(ms) > 0 {
		top = ms[len(ms)-1]
	}
	return quantile(ms, 0.5), quantile(ms, 0.99), top
}

// burst joins cfg.burst peers in cfg.burstTime with every daemon
// watching, waits until each has routed them, then deletes them as fast
// and waits until each has removed them. Latencies are taken from each
// request's sending (what a node's owner sees, the store's own delay
// under the burst included) and from the store's answer (the watcher's
// part alone).
func (r *cpRun) burst(c combo, results []*daemonResult) {
	joins := r.peers.Next(r.cfg.burst)
	subnets := subnetsOf(joins)
	load := loadAvg()
	sent, answered, err := paced(joins, r.cfg.burstTime, r.peers.Create)
	waitAll(r.daemons, subnets, len(subnets), r.cfg.timeout)
	delSent, delAnswered, derr := paced(joins, r.cfg.burstTime, r.peers.Delete)
	waitAll(r.daemons, subnets, 0, r.cfg.timeout)
	var st burstResult // the store's answer times, the same for every watcher
	st.StoreJoinP50, st.StoreJoinP99, _ = percentiles(answerTimes(sent, answered))
	st.StoreDeleteP50, st.StoreDeleteP99, _ = percentiles(answerTimes(delSent, delAnswered))
	for i, d := range r.daemons {
		if results[i].Startup == nil || d.proc == nil {
			continue
		}
		b := &burstResult{Joins: len(joins), Deletes: len(joins), Load: load, QueueMax: -1,
			StoreJoinP50: st.StoreJoinP50, StoreJoinP99: st.StoreJoinP99, StoreDeleteP50: st.StoreDeleteP50, StoreDeleteP99: st.StoreDeleteP99}
		if err != nil || derr != nil {
			b.GeneratorError = fmt.Sprint(err, derr)
		}
		ms, lost, rep := latencies(d, joins, sent, sent, true)
		b.JoinP50, b.JoinP99, b.JoinMax = percentiles(ms)
		b.JoinLost, b.JoinRepeated = lost, rep
		ms, _, _ = latencies(d, joins, sent, answered, true)
		b.JoinAnsP50, b.JoinAnsP99, _ = percentiles(ms)
		ms, lost, rep = latencies(d, joins, delSent, delSent, false)
		b.DeleteP50, b.DeleteP99, b.DeleteMax = percentiles(ms)
		b.DeleteLost, b.DeleteRepeated = lost, rep
		ms, _, _ = latencies(d, joins, delSent, delAnswered, false)
		b.DeleteAnsP50, b.DeleteAnsP99, _ = percentiles(ms)
		if v, ok := d.metric("flannelu_store_queue_depth_max"); ok {
			b.QueueMax = v
		}
		results[i].Burst = b
	}
}

// answerTimes are the store's times to answer each request, in
// milliseconds (requests that failed left out).
func answerTimes(sent, answered []time.Time) []float64 {
	var ms []float64
	for i := range sent {
		if !answered[i].IsZero() {
			ms = append(ms, float64(answered[i].Sub(sent[i]).Microseconds())/1000)
		}
	}
	return ms
}

// waitAll waits until every running daemon shows want of subnets, each
// with the same deadline.
func waitAll(daemons []*cpDaemon, subnets []netip.Prefix, want int, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for _, d := range daemons {
		if d.proc != nil {
			d.waitPresent(subnets, want, time.Until(deadline))
		}
	}
}

// steadyState lets the cluster run for cfg.steady: in Kubernetes mode
// every peer's node gets an annotation update (not one of flannel's, as
// kubelet and controllers write them) once per cfg.steadyPeriod, spread
// evenly; etcd has nothing periodic. Each daemon's CPU is sampled every
// second.
func (r *cpRun) steadyState(c combo, peers []testbed.Peer, results []*daemonResult) {
	load := loadAvg()
	start := time.Now()
	before := make([]procStat, len(r.daemons))
	calls := make([]int64, len(r.daemons))
	for i, d := range r.daemons {
		before[i], calls[i] = d.stat(), d.proxy.Calls()
	}
	maxSec := make([]float64, len(r.daemons))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // per-second CPU, for the resync spikes
		defer wg.Done()
		last := slices.Clone(before)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			for i, d := range r.daemons {
				now := d.stat()
				maxSec[i] = max(maxSec[i], now.CPUSec-last[i].CPUSec)
				last[i] = now
			}
		}
	}()
	updates := 0
	if c.store == "kube" && len(peers) > 0 {
		updates = r.annotationUpdates(peers, start.Add(r.cfg.steady))
	}
	time.Sleep(time.Until(start.Add(r.cfg.steady)))
	close(stop)
	wg.Wait()
	end := time.Now()
	hours := end.Sub(start).Hours()
	for i, d := range r.daemons {
		if results[i].Startup == nil || d.proc == nil {
			continue
		}
		now := d.stat()
		s := &steadyResult{Seconds: end.Sub(start).Seconds(), Updates: updates, CPUSec: now.CPUSec - before[i].CPUSec,
			MaxCPUPerSecond: maxSec[i], Stat: now, Load: load}
		if c.store == "kube" {
			s.Requests = r.audit.count(d.host.Addr.String(), start, end)
			s.RequestsTotal = total(s.Requests)
		} else {
			s.RequestsTotal = int(d.proxy.Calls() - calls[i])
		}
		s.RequestsPerHour = float64(s.RequestsTotal) / hours
		results[i].Steady = s
	}
}

// annotationUpdates patches peers' nodes round robin, N per steadyPeriod,
// until the deadline, and returns how many it made.
func (r *cpRun) annotationUpdates(peers []testbed.Peer, deadline time.Time) int {
	step := r.cfg.steadyPeriod / time.Duration(len(peers))
	n := 0
	start := time.Now()
	ctx, cancel := context.WithDeadline(context.Background(), deadline.Add(30*time.Second))
	defer cancel()
	var wg sync.WaitGroup
	for ; ; n++ {
		at := start.Add(time.Duration(n) * step)
		if at.After(deadline) {
			break
		}
		time.Sleep(time.Until(at))
		p := peers[n%len(peers)]
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{
			"bench.flannelu.example/heartbeat": time.Now().UTC().Format(time.RFC3339Nano)}}})
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.peers.Kube.CoreV1().Nodes().Patch(ctx, p.Name, types.MergePatchType, patch, metav1.PatchOptions{}) //nolint:errcheck // load only
		}()
	}
	wg.Wait()
	return n
}

// compaction holds every daemon's etcd connection, deletes and adds
// peers, compacts etcd at its current revision and drops the held
// connections: each daemon's watch then resumes from a revision compacted
// away and must list again. It measures the catch-up, the log lines and
// the CPU of the 10 s after.
func (r *cpRun) compaction(c combo, peers []testbed.Peer, results []*daemonResult) {
	const changes = 50
	n := min(changes, len(peers))
	gone := peers[:n]
	added := r.peers.Next(n)
	load := loadAvg()
	for _, d := range r.daemons {
		d.proxy.Pause()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := r.peers.DeleteAll(ctx, gone)
	if err == nil {
		err = r.peers.CreateAll(ctx, added)
	}
	var rev int64
	if err == nil {
		if g, gerr := r.cluster.Client.Get(ctx, testbed.EtcdPrefix+"/config"); gerr == nil {
			rev = g.Header.Revision
			_, err = r.cluster.Client.Compact(ctx, rev)
		} else {
			err = gerr
		}
	}
	before := make([]procStat, len(r.daemons))
	offs := make([]int64, len(r.daemons))
	calls := make([]int64, len(r.daemons))
	for i, d := range r.daemons {
		if d.proc != nil {
			before[i], calls[i] = d.stat(), d.proxy.Calls()
			_, offs[i] = d.logLines(0)
		}
		d.proxy.Cut()
		d.proxy.Resume()
	}
	t0 := time.Now()
	for i, d := range r.daemons {
		if results[i].Startup == nil || d.proc == nil {
			continue
		}
		cr := &compactionResult{Changes: 2 * n, CompactRevision: rev, Load: load}
		if err != nil {
			cr.Error = err.Error()
		}
		deadline := t0.Add(r.cfg.timeout)
		cr.Complete = d.waitPresent(subnetsOf(gone), 0, time.Until(deadline)) && d.waitPresent(subnetsOf(added), n, time.Until(deadline))
		if cr.Complete {
			cr.CatchUpS = time.Since(t0).Seconds()
		}
		results[i].Compaction = cr
	}
	time.Sleep(time.Until(t0.Add(10 * time.Second)))
	for i, d := range r.daemons {
		cr := results[i].Compaction
		if cr == nil {
			continue
		}
		cr.LogLines, _ = d.logLines(offs[i])
		cr.Exited = d.proc.Exited()
		if !cr.Exited { // an exited process has no /proc to read: no CPU time
			cr.CPUSec = d.stat().CPUSec - before[i].CPUSec
		}
		cr.Calls = d.proxy.Calls() - calls[i]
	}
}
