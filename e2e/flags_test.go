package e2e

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
)

// flanneldV028Bin is where scripts/flanneld.sh (make flanneld) builds
// flanneld v0.28.9, today's kube-flannel.
const flanneldV028Bin = "bin/flanneld-v0.28.9"

// TestFlagsAsFlanneldV028 runs flanneld v0.28.9 --help and flannelu --help
// and compares the flag sets: every flag flanneld takes on Linux is one of
// flannelu's, of the same kind (a bool flag stays a bool: "--flag" alone
// must work) and with the same default.
func TestFlagsAsFlanneldV028(t *testing.T) {
	t.Parallel()
	flanneld := flanneldBinaryOf(t, flanneldV028Bin)
	theirs := helpFlags(t, flanneld)
	ours := helpFlags(t, flannelu)
	if len(theirs) < 31 {
		t.Fatalf("flanneld v0.28.9 --help lists %d flags, want its 31:\n%v", len(theirs), theirs)
	}
	var names []string
	for name := range theirs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		want := theirs[name]
		got, ok := ours[name]
		switch {
		case !ok:
			t.Errorf("-%s (%s) is flanneld's and not flannelu's", name, want)
		case got != want:
			t.Errorf("-%s: flannelu's is %q, flanneld's %q (kind and default)", name, got, want)
		}
	}
	t.Logf("%d of flanneld v0.28.9's flags compared; flannelu has %d more of its own", len(theirs), len(ours)-len(theirs))
}

// helpFlags runs bin --help and returns each flag's kind and default, as
// flag.PrintDefaults prints them: "string default=/run/flannel/subnet.env".
func helpFlags(t *testing.T, bin string) map[string]string {
	t.Helper()
	out, err := exec.Command(bin, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("%s --help: %v\n%s", bin, err, out)
	}
	flags := map[string]string{}
	head := regexp.MustCompile(`^  -(\S+)(?: (\S+))?`)
	def := regexp.MustCompile(`\(default (.*)\)$`)
	var last string
	for _, line := range strings.Split(string(out), "\n") {
		if m := head.FindStringSubmatch(line); m != nil {
			last = m[1]
			kind := m[2]
			if kind == "" {
				kind = "bool"
			}
			flags[last] = kind
			continue
		}
		if m := def.FindStringSubmatch(line); m != nil && last != "" {
			flags[last] += " default=" + m[1]
		}
	}
	return flags
}

// flanneldBinaryOf builds flanneld (both versions) where make flanneld puts
// it, unless it is there already (make test builds it first).
func flanneldBinaryOf(t *testing.T, rel string) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(root, rel)
	// Once per process: tests run in parallel, and two builds at once
	// would write the same files.
	flanneldBuild.Lock()
	defer flanneldBuild.Unlock()
	if _, err := exec.LookPath(bin); err != nil {
		cmd := exec.Command(filepath.Join(root, "scripts", "flanneld.sh"))
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("scripts/flanneld.sh: %v\n%s", err, out)
		}
	}
	return bin
}

var flanneldBuild sync.Mutex
