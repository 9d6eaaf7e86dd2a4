//go:build linux

package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"os"
	"sync"
	"time"
)

// auditPolicy logs one line per request of a service account (the
// daemons run as flannel's) when the API server receives it: the test
// harness's own requests (admin) and the API server's are not logged.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["ResponseStarted", "ResponseComplete", "Panic"]
rules:
- level: Metadata
  userGroups: ["system:serviceaccounts"]
- level: None
`

// auditLog reads the API server's audit log as it grows.
type auditLog struct {
	path string
	mu   sync.Mutex
	off  int64
	reqs []auditReq
}

type auditReq struct {
	at          time.Time
	ip, verb    string
	resource    string
	subresource string
}

type auditEvent struct {
	Verb      string   `json:"verb"`
	SourceIPs []string `json:"sourceIPs"`
	ObjectRef struct {
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
	} `json:"objectRef"`
	RequestReceived time.Time `json:"requestReceivedTimestamp"`
}

// read takes in the lines written since the last read.
func (a *auditLog) read() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	f, err := os.Open(a.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Seek(a.off, io.SeekStart); err != nil {
		return err
	}
	r := bufio.NewReaderSize(f, 1<<20)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return nil // a partial last line is read again next time
		}
		a.off += int64(len(line))
		var ev auditEvent
		if json.Unmarshal(line, &ev) != nil || len(ev.SourceIPs) == 0 {
			continue
		}
		a.reqs = append(a.reqs, auditReq{at: ev.RequestReceived, ip: ev.SourceIPs[0], verb: ev.Verb,
			resource: ev.ObjectRef.Resource, subresource: ev.ObjectRef.Subresource})
	}
}

// count returns the requests from ip received in [from, to), by verb.
func (a *auditLog) count(ip string, from, to time.Time) map[string]int {
	a.read() //nolint:errcheck // counted from what could be read
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]int{}
	for _, r := range a.reqs {
		if r.ip == ip && !r.at.Before(from) && r.at.Before(to) {
			verb := r.verb
			if r.subresource != "" {
				verb += " " + r.resource + "/" + r.subresource
			}
			out[verb]++
		}
	}
	return out
}

func total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
