package incumbent

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// defaultSubnetFile is flanneld's --subnet-file default.
const defaultSubnetFile = "/run/flannel/subnet.env"

// flanneldPIDs lists the visible flanneld processes of this network
// namespace that write subnetFile.
func flanneldPIDs(subnetFile string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	own, err := netnsOf("self")
	if err != nil {
		return nil
	}
	want := absPath(subnetFile, "")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() || !isFlanneld(pid) {
			continue
		}
		if ns, err := netnsOf(e.Name()); err != nil || ns != own {
			continue
		}
		if writes(pid) == want {
			pids = append(pids, pid)
		}
	}
	return pids
}

// isFlanneld: the process's name (comm, at most 15 bytes) starts with
// flanneld, as flanneld's and a versioned copy's ("flanneld-v0.28.") do,
// and it has not exited.
func isFlanneld(pid int) bool {
	comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	return err == nil && strings.HasPrefix(string(comm), "flanneld") && alive(pid)
}

// alive: the process exists and is not a zombie.
func alive(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) state ...: the state follows the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] != 'Z' && stat[i+2] != 'X'
}

// writes is the subnet file a flanneld process writes: --subnet-file on
// its command line, else FLANNELD_SUBNET_FILE, else flanneld's default,
// relative to its working directory.
func writes(pid int) string {
	dir := "/proc/" + strconv.Itoa(pid)
	cwd, _ := os.Readlink(dir + "/cwd")
	cmdline, _ := os.ReadFile(dir + "/cmdline")
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	for i, a := range args {
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "subnet-file" {
			continue
		}
		if hasValue {
			return absPath(value, cwd)
		}
		if i+1 < len(args) {
			return absPath(args[i+1], cwd)
		}
	}
	environ, _ := os.ReadFile(dir + "/environ")
	for _, kv := range strings.Split(string(environ), "\x00") {
		if v, ok := strings.CutPrefix(kv, "FLANNELD_SUBNET_FILE="); ok && v != "" {
			return absPath(v, cwd)
		}
	}
	return defaultSubnetFile
}

func absPath(p, cwd string) string {
	if !filepath.IsAbs(p) {
		if cwd == "" {
			cwd, _ = os.Getwd()
		}
		p = filepath.Join(cwd, p)
	}
	return filepath.Clean(p)
}

type netns struct{ dev, ino uint64 }

func netnsOf(pid string) (netns, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/"+pid+"/ns/net", &st); err != nil {
		return netns{}, err
	}
	return netns{uint64(st.Dev), st.Ino}, nil
}

func joinInts(is []int) string {
	s := make([]string, len(is))
	for i, v := range is {
		s[i] = strconv.Itoa(v)
	}
	return strings.Join(s, ", ")
}
