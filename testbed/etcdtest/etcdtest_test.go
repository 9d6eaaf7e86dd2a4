package etcdtest

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestRestartKeepsData: a value written before Restart is read back after,
// through a client opened before the restart.
func TestRestartKeepsData(t *testing.T) {
	s := Start(t)
	cli := s.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	s.Restart()
	resp, err := cli.Get(ctx, "k")
	if err != nil {
		t.Fatalf("get after restart: %v", err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("after restart got %v, want k=v", resp.Kvs)
	}
}

// TestCompactNow: reading at a revision before the compaction fails.
func TestCompactNow(t *testing.T) {
	s := Start(t)
	cli := s.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r1, err := cli.Put(ctx, "k", "1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "k", "2"); err != nil {
		t.Fatal(err)
	}
	s.CompactNow()
	if _, err := cli.Get(ctx, "k", withRev(r1.Header.Revision)); err == nil {
		t.Fatal("get at a compacted revision succeeded, want an error")
	}
}

func withRev(rev int64) clientv3.OpOption { return clientv3.WithRev(rev) }
