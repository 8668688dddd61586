package bench

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/proxy"
)

// Kinds of target.
const (
	KindDirect   = "direct"   // the fake upstream itself
	KindChutes   = "chutes"   // chutes-proxy, in-process or the binary
	KindBare     = "bare"     // httputil.ReverseProxy with Go's default Transport
	KindExternal = "external" // --target NAME=URL, run by someone else
)

// Target is one place the load is sent to.
type Target struct {
	Name string
	Kind string
	URL  string // base without /v1, e.g. http://127.0.0.1:8080
	// PprofAddr serves the binary's net/http/pprof, "" when it has none.
	PprofAddr string
	// PID is the process that serves it when that is not this one (the
	// binary), 0 otherwise.
	PID int
	// CPUPIDs are the processes whose CPU time is the target's (the binary,
	// the bare subprocess, an external proxy's master and workers); none
	// when it shares this process.
	CPUPIDs []int
	// Mem reads the serving side's memory; nil when unknown.
	Mem   func(gc bool) (Mem, error)
	close func()
}

// Close stops what the target started.
func (t *Target) Close() {
	if t.close != nil {
		t.close()
	}
}

// Mem is a memory reading of the proxy under test.
type Mem struct {
	HeapAlloc  uint64 // live heap when read after a GC
	StackInuse uint64
	TotalAlloc uint64 // bytes allocated so far (cumulative)
	RSS        uint64 // VmRSS
	HWM        uint64 // VmHWM: peak RSS
	HaveHeap   bool   // HeapAlloc/StackInuse/TotalAlloc are set
}

// configTOML is the proxy's config for a run: the fake upstream, no key
// check, no probes, no account API (nothing leaves loopback), and the bench
// models' chains.
func configTOML(upstreamURL string) string {
	return `listen = "127.0.0.1:0"
max_body_mb = 32

[upstream]
base_url = "` + upstreamURL + `/v1"
api_key = "cpk_bench0123456789abcdef.benchbenchbench"
connect_timeout = "2s"
first_byte_timeout = "10s"
idle_timeout = "30s"
request_timeout = "2m"
account_url = ""

[failover]
max_attempts = 3

[health]
probe_interval = "0s"

[[models]]
id = "` + ModelOK + `"
fallbacks = ["` + ModelBackup + `"]

[[models]]
id = "` + ModelBackup + `"
aliases = ["` + AliasBackup + `"]

# Never opens: every request pays the refused attempt.
[[models]]
id = "` + ModelRefused + `"
fallbacks = ["` + ModelBackup + `"]
failures = 1000000000

# Opens after 3 failures and stays open for the whole run.
[[models]]
id = "` + ModelDead + `"
fallbacks = ["` + ModelBackup + `"]
failures = 3
cooldown = "1h"
`
}

// writeConfig writes the run's proxy.toml into dir.
func writeConfig(dir, upstreamURL string) (string, error) {
	path := filepath.Join(dir, "proxy.toml")
	return path, os.WriteFile(path, []byte(configTOML(upstreamURL)), 0o600)
}

func noEnv(string) string { return "" }

// StartInProcess serves chutes-proxy from this process: config.Load of the
// run's file with an empty environment, proxy.New, proxy.HTTPServer on
// 127.0.0.1:0. Its log lines are formatted as the binary's are (text,
// level info) and dropped, so that their cost is counted.
func StartInProcess(dir, upstreamURL string) (*Target, error) {
	path, err := writeConfig(dir, upstreamURL)
	if err != nil {
		return nil, err
	}
	cfg, err := config.Load(config.Options{File: path, Getenv: noEnv, Dir: dir})
	if err != nil {
		return nil, fmt.Errorf("the bench config: %w", err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	srv := proxy.New(proxy.Options{Config: cfg, Logger: log})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	hs := proxy.HTTPServer(ln.Addr().String(), srv, log)
	go func() { _ = hs.Serve(ln) }()
	return &Target{
		Name: "chutes-proxy", Kind: KindChutes, URL: "http://" + ln.Addr().String(),
		Mem: selfMem,
		close: func() {
			_ = hs.Close()
			srv.Close()
		},
	}, nil
}

// selfMem reads this process's memory: Go's figures after an optional GC,
// and the kernel's RSS.
func selfMem(gc bool) (Mem, error) {
	if gc {
		runtime.GC()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss, hwm, err := procStatus(os.Getpid())
	return Mem{HeapAlloc: ms.HeapAlloc, StackInuse: ms.StackInuse, TotalAlloc: ms.TotalAlloc,
		RSS: rss, HWM: hwm, HaveHeap: true}, err
}

// procStatus reads VmRSS and VmHWM of pid in bytes.
func procStatus(pid int) (rss, hwm uint64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseUint(f[0], 10, 64)
		if k == "VmRSS" {
			rss = n << 10
		} else {
			hwm = n << 10
		}
	}
	return rss, hwm, nil
}

// Binary is a chutes-proxy binary run as a subprocess.
type Binary struct {
	Path string
	Dir  string
	// Env is added to the binary's environment (KEY=VALUE).
	Env   []string
	pprof bool // the binary has serve --pprof
}

// NewBinary checks path and whether its serve command has --pprof (then
// heap figures come from the binary's own runtime).
func NewBinary(path, dir string) (*Binary, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(abs); err != nil {
		return nil, err
	}
	out, _ := exec.Command(abs, "serve", "--help").CombinedOutput()
	return &Binary{Path: abs, Dir: dir, pprof: strings.Contains(string(out), "-pprof")}, nil
}

// Start runs the binary on a free loopback port and returns once it accepts
// connections, with the time from exec to that moment.
func (b *Binary) Start(upstreamURL string) (*Target, time.Duration, error) {
	path, err := writeConfig(b.Dir, upstreamURL)
	if err != nil {
		return nil, 0, err
	}
	addr, err := freePort()
	if err != nil {
		return nil, 0, err
	}
	args := []string{"serve", "--config", path, "--listen", addr}
	var paddr string
	if b.pprof {
		if paddr, err = freePort(); err != nil {
			return nil, 0, err
		}
		args = append(args, "--pprof", paddr)
	}
	cmd := exec.Command(b.Path, args...)
	cmd.Dir = b.Dir
	cmd.Env = append(cleanEnv(), b.Env...)
	// Wait must not hang on a stderr pipe that an orphaned child holds.
	cmd.WaitDelay = 2 * time.Second
	logPath := filepath.Join(b.Dir, "chutes-proxy.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, 0, err
	}
	// The binary logs one line per request: keep the start of the log for
	// a failed start, drop the rest.
	cmd.Stderr = &headWriter{w: logf, left: 64 << 10}
	cmd.Stdout = io.Discard
	start := time.Now()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, 0, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logf.Close() }()
	startup, err := waitListening(start, addr, exited, 10*time.Second)
	if err != nil {
		_ = cmd.Process.Kill()
		<-exited
		log, _ := os.ReadFile(logPath)
		return nil, 0, fmt.Errorf("%s did not start listening: %w\n%s", b.Path, err, log)
	}
	t := &Target{
		Name: "chutes-proxy", Kind: KindChutes, URL: "http://" + addr, PID: cmd.Process.Pid, PprofAddr: paddr,
		CPUPIDs: []int{cmd.Process.Pid},
		close: func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
		},
	}
	pid := cmd.Process.Pid
	t.Mem = func(gc bool) (Mem, error) {
		rss, hwm, err := procStatus(pid)
		m := Mem{RSS: rss, HWM: hwm}
		if err != nil || paddr == "" {
			return m, err
		}
		if err := readPprofMem(paddr, gc, &m); err != nil {
			return m, err
		}
		return m, nil
	}
	return t, startup, nil
}

// waitListening dials addr until it answers and returns how long that took
// since start (just before exec).
func waitListening(start time.Time, addr string, exited <-chan error, limit time.Duration) (time.Duration, error) {
	for {
		c, err := net.DialTimeout("tcp", addr, 50*time.Millisecond)
		if err == nil {
			d := time.Since(start)
			c.Close()
			return d, nil
		}
		select {
		case err := <-exited:
			if err == nil {
				err = errors.New("exited")
			}
			return 0, err
		default:
		}
		if time.Since(start) > limit {
			return 0, fmt.Errorf("not listening on %s after %s", addr, limit)
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// cleanEnv is the environment without CHUTES_* so that nothing but the run's
// config file steers the binary.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CHUTES_") {
			env = append(env, kv)
		}
	}
	return env
}

// freePort returns a loopback address whose port was free a moment ago.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr, nil
}

// readPprofMem reads the runtime.MemStats lines that the debug=1 heap
// profile ends with (gc=1 runs a GC first).
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
		line := sc.Text()
		if !strings.HasPrefix(line, "# ") {
			continue
		}
		k, v, ok := strings.Cut(line[2:], " = ")
		if !ok {
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

// CPUProfile fetches a CPU profile of d from the binary's --pprof.
func cpuProfileURL(addr string, d time.Duration) string {
	return "http://" + addr + "/debug/pprof/profile?seconds=" + strconv.Itoa(int(d.Seconds()))
}

// headWriter keeps the first left bytes and drops the rest.
type headWriter struct {
	w    io.Writer
	left int
}

func (h *headWriter) Write(p []byte) (int, error) {
	if h.left > 0 {
		n := min(len(p), h.left)
		_, _ = h.w.Write(p[:n])
		h.left -= n
	}
	return len(p), nil
}

// Variants of the bare proxy.
const (
	Bare      = ""      // httputil.ReverseProxy, Go's default Transport
	BareTuned = "tuned" // the same with 256 idle connections per host
	// TCPRelay copies bytes between the client's connection and one of its
	// own to the upstream, two goroutines per connection, no HTTP at all:
	// the floor of any goroutine-per-connection Go proxy on the machine.
	TCPRelay = "relay"
)

// bareHandler is a bare httputil.ReverseProxy to upstreamURL: with Go's
// default Transport (2 idle connections per host), what someone writing a
// proxy in ten lines gets; tuned, with as many idle connections as
// chutes-proxy keeps (256 per host), which is the floor of what net/http
// costs per proxied request.
func bareHandler(upstreamURL string, tuned bool) (http.Handler, error) {
	u, err := url.Parse(upstreamURL)
	if err != nil {
		return nil, err
	}
	rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(u) }}
	if tuned {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 512, 256
		rp.Transport = tr
	}
	return rp, nil
}

func bareName(variant string) string {
	switch variant {
	case BareTuned:
		return "bare-go-tuned"
	case TCPRelay:
		return "go-tcp-relay"
	}
	return "bare-go"
}

// serveBare serves the variant on ln until ln is closed.
func serveBare(ln net.Listener, upstreamURL, variant string) error {
	if variant == TCPRelay {
		return serveRelay(ln, upstreamURL)
	}
	h, err := bareHandler(upstreamURL, variant == BareTuned)
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	return hs.Serve(ln)
}

// serveRelay is the TCPRelay variant: one upstream connection for each
// client connection, bytes copied both ways until either side closes.
func serveRelay(ln net.Listener, upstreamURL string) error {
	u, err := url.Parse(upstreamURL)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			up, err := net.Dial("tcp", u.Host)
			if err != nil {
				return
			}
			defer up.Close()
			go func() {
				_, _ = io.Copy(up, c)
				_ = up.(*net.TCPConn).CloseWrite()
			}()
			_, _ = io.Copy(c, up)
		}()
	}
}

// StartBare serves a bare proxy variant from this process.
func StartBare(upstreamURL, variant string) (*Target, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	if _, err := url.Parse(upstreamURL); err != nil {
		ln.Close()
		return nil, err
	}
	go func() { _ = serveBare(ln, upstreamURL, variant) }()
	return &Target{Name: bareName(variant), Kind: KindBare, URL: "http://" + ln.Addr().String(),
		close: func() { _ = ln.Close() }}, nil
}

// BareCommand is the hidden first argument with which chutes-bench serves a
// bare proxy itself: chutes-bench _bare ADDR UPSTREAM_URL [tuned|relay].
const BareCommand = "_bare"

// ServeBare is BareCommand's body: it serves the variant on addr until the
// process is killed.
func ServeBare(addr, upstreamURL, variant string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return serveBare(ln, upstreamURL, variant)
}

// StartBareProcess runs the bare proxy as a subprocess of this executable,
// so that it crosses a process boundary as the chutes-proxy binary and
// nginx do (in one process, Go hands requests between goroutines without
// waking another process: cheaper than any real deployment).
func StartBareProcess(upstreamURL, variant string) (*Target, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	args := []string{BareCommand, addr, upstreamURL, variant}
	cmd := exec.Command(self, args...)
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	if _, err := waitListening(time.Now(), addr, exited, 10*time.Second); err != nil {
		_ = cmd.Process.Kill()
		<-exited
		return nil, fmt.Errorf("the bare proxy: %w", err)
	}
	pid := cmd.Process.Pid
	return &Target{Name: bareName(variant), Kind: KindBare, URL: "http://" + addr, PID: pid, CPUPIDs: []int{pid},
		Mem: func(bool) (Mem, error) {
			rss, hwm, err := procStatus(pid)
			return Mem{RSS: rss, HWM: hwm}, err
		},
		close: func() {
			_ = cmd.Process.Kill()
			<-exited
		}}, nil
}

// External is a proxy someone else runs in front of the same upstream.
func External(name, base string) *Target {
	base = strings.TrimRight(base, "/")
	base = strings.TrimSuffix(base, "/v1")
	t := &Target{Name: name, Kind: KindExternal, URL: base}
	if u, err := url.Parse(base); err == nil {
		t.CPUPIDs, _ = listenerPIDs(u.Host)
	}
	return t
}
