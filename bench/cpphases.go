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
// was sent and the first error.
func paced(peers []testbed.Peer, d time.Duration, do func(context.Context, testbed.Peer) error) ([]time.Time, error) {
	sent := make([]time.Time, len(peers))
	step := d / time.Duration(max(1, len(peers)))
	ctx, cancel := context.WithTimeout(context.Background(), d+2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	start := time.Now()
	for i, p := range peers {
		time.Sleep(time.Until(start.Add(time.Duration(i) * step)))
		sent[i] = time.Now()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := do(ctx, p); err != nil {
				mu.Lock()
				if first == nil {
					first = fmt.Errorf("%s: %w", p.Name, err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return sent, first
}

// latencies are one watcher's times from each request to the kernel (or
// route table) showing it, in milliseconds; lost counts requests never
// seen before the deadline, repeated those seen more than once.
func latencies(d *cpDaemon, peers []testbed.Peer, sent []time.Time, added bool) (ms []float64, lost, repeated int) {
	for i, p := range peers {
		at, n := d.obs.firstAfter(p.Subnet, sent[i], added)
		if at.IsZero() {
			lost++
			continue
		}
		if n > 1 {
			repeated++
		}
		ms = append(ms, float64(max(0, at.Sub(sent[i]).Microseconds()))/1000)
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

// burst joins cfg.burst peers in cfg.burstTime with every daemon
// watching, waits until each has routed them, then deletes them as fast
// and waits until each has removed them.
func (r *cpRun) burst(c combo, results []*daemonResult) {
	joins := r.peers.Next(r.cfg.burst)
	subnets := subnetsOf(joins)
	load := loadAvg()
	sent, err := paced(joins, r.cfg.burstTime, r.peers.Create)
	waitAll(r.daemons, subnets, len(subnets), r.cfg.timeout)
	delSent, derr := paced(joins, r.cfg.burstTime, r.peers.Delete)
	waitAll(r.daemons, subnets, 0, r.cfg.timeout)
	for i, d := range r.daemons {
		if results[i].Startup == nil || d.proc == nil {
			continue
		}
		b := &burstResult{Joins: len(joins), Deletes: len(joins), Load: load, QueueMax: -1}
		if err != nil || derr != nil {
			b.GeneratorError = fmt.Sprint(err, derr)
		}
		ms, lost, rep := latencies(d, joins, sent, true)
		slices.Sort(ms)
		b.JoinP50, b.JoinP99, b.JoinLost, b.JoinRepeated = quantile(ms, 0.5), quantile(ms, 0.99), lost, rep
		if len(ms) > 0 {
			b.JoinMax = ms[len(ms)-1]
		}
		ms, lost, rep = latencies(d, joins, delSent, false)
		slices.Sort(ms)
		b.DeleteP50, b.DeleteP99, b.DeleteLost, b.DeleteRepeated = quantile(ms, 0.5), quantile(ms, 0.99), lost, rep
		if len(ms) > 0 {
			b.DeleteMax = ms[len(ms)-1]
		}
		if v, ok := d.metric("flannelu_store_queue_depth_max"); ok {
			b.QueueMax = v
		}
		results[i].Burst = b
	}
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
		cr.CPUSec = d.stat().CPUSec - before[i].CPUSec
		cr.Calls = d.proxy.Calls() - calls[i]
		cr.Exited = d.proc.Exited()
	}
}
