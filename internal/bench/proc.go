package bench

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// userHZ is the kernel's clock tick for /proc/PID/stat times (USER_HZ,
// 100 on every Linux architecture Go supports).
const userHZ = 100

// procCPU is the CPU time (user + system, all threads) that pids have used
// so far; false when one of them cannot be read.
func procCPU(pids []int) (time.Duration, bool) {
	if len(pids) == 0 {
		return 0, false
	}
	var ticks uint64
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return 0, false
		}
		// The command name (field 2) may hold spaces: count fields from
		// after its closing parenthesis. utime and stime are fields 14 and
		// 15, so the 12th and 13th after it.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			return 0, false
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 13 {
			return 0, false
		}
		u, err1 := strconv.ParseUint(f[11], 10, 64)
		st, err2 := strconv.ParseUint(f[12], 10, 64)
		if err1 != nil || err2 != nil {
			return 0, false
		}
		ticks += u + st
	}
	return time.Duration(ticks) * time.Second / userHZ, true
}

// listenerPIDs finds the processes that hold the loopback listening socket
// of addr (host:port), e.g. nginx's master and worker, so that their CPU
// time can be counted. It reads /proc/net/tcp and /proc/*/fd.
func listenerPIDs(addr string) ([]int, error) {
	_, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, err
	}
	inodes := map[string]bool{}
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		for line := range strings.Lines(string(b)) {
			f := strings.Fields(line)
			// sl local_address rem_address st ... inode is field 10
			if len(f) < 10 || f[3] != "0A" {
				continue
			}
			_, p, ok := strings.Cut(f[1], ":")
			if !ok {
				continue
			}
			if n, err := strconv.ParseUint(p, 16, 32); err == nil && int(n) == port {
				inodes["socket:["+f[9]+"]"] = true
			}
		}
	}
	if len(inodes) == 0 {
		return nil, fmt.Errorf("no process listens on %s", addr)
	}
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	seen := map[int]bool{}
	var pids []int
	for _, fd := range fds {
		link, err := os.Readlink(fd)
		if err != nil || !inodes[link] {
			continue
		}
		pid, err := strconv.Atoi(strings.Split(fd, "/")[2])
		if err != nil || seen[pid] || pid == os.Getpid() {
			continue
		}
		seen[pid] = true
		pids = append(pids, pid)
	}
	if len(pids) == 0 {
		return nil, fmt.Errorf("cannot see which process listens on %s", addr)
	}
	return pids, nil
}

// procStatus reads VmRSS and VmHWM of pid in bytes.
func procStatus(pid int) (rss, hwm uint64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.Lines(string(b)) {
		k, v, _ := strings.Cut(line, ":")
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseUint(f[0], 10, 64)
		switch k {
		case "VmRSS":
			rss = n << 10
		case "VmHWM":
			hwm = n << 10
		}
	}
	return rss, hwm, nil
}

// readPprofMem reads the runtime.MemStats lines that the debug=1 heap
// profile of the pprof server at addr ends with (gc=1 runs a GC first).
func readPprofMem(addr string, gc bool, m *Mem) error {
	u := "http://" + addr + "/debug/pprof/heap?debug=1"
	if gc {
		u += "&gc=1"
	}
	resp, err := http.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "# ")
		k, v, ok2 := strings.Cut(line, " = ")
		if !ok || !ok2 {
			continue
		}
		v, _, _ = strings.Cut(v, " / ") // "Stack = inuse / sys"
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "HeapAlloc":
			m.HeapAlloc, m.HaveHeap = n, true
		case "Stack":
			m.StackInuse = n
		case "TotalAlloc":
			m.TotalAlloc = n
		}
	}
	return sc.Err()
}
