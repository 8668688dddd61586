package bench

import (
	"bytes"
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
	"strings"
	"syscall"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/proxy"
	"github.com/chutes-proxy/chutes-proxy/internal/simulator"
)

// The models of a run. The simulator plays them the same for every proxy in
// front of it.
const (
	// ModelOK answers at once; its chain is [ok, backup].
	ModelOK = "bench/ok"
	// ModelBackup answers at once; it is every chain's fallback.
	ModelBackup = "bench/backup"
	// AliasBackup is an alias of ModelBackup: a request for it is served by
	// the backup with the body's model rewritten, as after a failover, but
	// without a skip.
	AliasBackup = "bench-backup-alias"
	// ModelRefused stands for a model whose upstream refuses connections:
	// the simulator resets the connection, which the proxy sees as a
	// connection error before any byte. Its breaker never opens.
	ModelRefused = "bench/refused"
	// ModelDead is down (503); three of those open its breaker for an hour.
	ModelDead = "bench/dead"
)

// upstream is the simulator, served on loopback.
type upstream struct {
	*simulator.Bench
	URL string // http://127.0.0.1:PORT
	srv *http.Server
}

func startUpstream(addr string) (*upstream, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	sc := simulator.Scenario{AcceptAnyKey: true, Models: []simulator.ModelScenario{
		{ID: ModelDead, Behavior: simulator.Behavior{Kind: simulator.KindDown}},
	}}
	sim := simulator.NewBench(sc, []string{ModelOK, ModelBackup}, []string{ModelRefused})
	u := &upstream{Bench: sim, URL: "http://" + ln.Addr().String(),
		srv: &http.Server{Handler: sim, ReadHeaderTimeout: 10 * time.Second}}
	go func() { _ = u.srv.Serve(ln) }()
	return u, nil
}

// Close ends the simulator's waits, then its connections.
func (u *upstream) Close() {
	u.Bench.Close()
	_ = u.srv.Close()
}

// Target is one place the load is sent to.
type Target struct {
	Name string
	URL  string // base without /v1, e.g. http://127.0.0.1:8080
	// PID is the chutes-proxy binary's process; 0 for every other target.
	PID int
	// PprofAddr serves the binary's net/http/pprof, "" when it has none.
	PprofAddr string
	// CPUPIDs are the processes whose CPU time is the target's; none when
	// it shares this process.
	CPUPIDs  []int
	external bool
	close    func()
}

// Close stops what the target started.
func (t *Target) Close() {
	if t.close != nil {
		t.close()
	}
}

// Mem is a memory reading of the chutes-proxy binary.
type Mem struct {
	HeapAlloc  uint64 // live heap when read after a GC
	StackInuse uint64
	TotalAlloc uint64 // bytes allocated so far
	RSS        uint64 // VmRSS
	HWM        uint64 // VmHWM: peak RSS
	HaveHeap   bool   // HeapAlloc, StackInuse and TotalAlloc are set
}

var errNoProcess = errors.New("no process of its own")

// Mem reads the binary's RSS from /proc and its Go heap from its pprof
// (after a GC when gc is set).
func (t *Target) Mem(gc bool) (Mem, error) {
	if t.PID == 0 {
		return Mem{}, errNoProcess
	}
	var m Mem
	var err error
	if m.RSS, m.HWM, err = procStatus(t.PID); err != nil || t.PprofAddr == "" {
		return m, err
	}
	return m, readPprofMem(t.PprofAddr, gc, &m)
}

// configTOML is the proxy's config for a run: the simulator, no probes, no
// account API (nothing leaves loopback), and the bench models' chains.
// streamPlain false sets stream_plain = false; otherwise the key is left
// out (the default is on), so that a binary older than stream_plain still
// reads the config.
func configTOML(upstreamURL string, streamPlain bool) string {
	plainKey := ""
	if !streamPlain {
		plainKey = "stream_plain = false\n"
	}
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
` + plainKey + `

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

// writeConfig writes the run's config into dir, one file per stream_plain
// setting.
func writeConfig(dir, upstreamURL string, streamPlain bool) (string, error) {
	path := filepath.Join(dir, "proxy.toml")
	if !streamPlain {
		path = filepath.Join(dir, "proxy-stream-plain-off.toml")
	}
	return path, os.WriteFile(path, []byte(configTOML(upstreamURL, streamPlain)), 0o600)
}

// startInProcess serves chutes-proxy from this process: the run's config
// with an empty environment, proxy.New and proxy.HTTPServer. Its log lines
// are formatted as the binary's are (text, level info) and dropped, so that
// their cost is counted.
func startInProcess(dir, upstreamURL string, streamPlain bool) (*Target, error) {
	path, err := writeConfig(dir, upstreamURL, streamPlain)
	if err != nil {
		return nil, err
	}
	cfg, err := config.Load(config.Options{File: path, Getenv: func(string) string { return "" }, Dir: dir})
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
	return &Target{Name: "chutes-proxy", URL: "http://" + ln.Addr().String(), close: func() {
		_ = hs.Close()
		srv.Close()
	}}, nil
}

// binary is a chutes-proxy binary to run as `serve` on a free port.
type binary struct {
	path, config string
	env          []string
	pprof        bool // its serve has --pprof
}

func newBinary(path string, env []string, dir, upstreamURL string, streamPlain bool) (*binary, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(abs); err != nil {
		return nil, err
	}
	config, err := writeConfig(dir, upstreamURL, streamPlain)
	if err != nil {
		return nil, err
	}
	help, _ := exec.Command(abs, "serve", "--help").CombinedOutput()
	return &binary{path: abs, config: config, env: env, pprof: bytes.Contains(help, []byte("-pprof"))}, nil
}

// start returns once the binary accepts connections, with the time from
// exec to then.
func (b *binary) start() (*Target, time.Duration, error) {
	addr, err := freePort()
	if err != nil {
		return nil, 0, err
	}
	cmd := exec.Command(b.path, "serve", "--config", b.config, "--listen", addr)
	var paddr string
	if b.pprof {
		if paddr, err = freePort(); err != nil {
			return nil, 0, err
		}
		cmd.Args = append(cmd.Args, "--pprof", paddr)
	}
	cmd.Dir = filepath.Dir(b.config)
	// Nothing but the run's config steers it: no CHUTES_* variables.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CHUTES_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, b.env...)
	// It logs a line per request: keep the head for a failed start.
	log := &headWriter{left: 64 << 10}
	cmd.Stderr = log
	t, d, err := startProcess("chutes-proxy", cmd, addr)
	if err != nil {
		return nil, 0, fmt.Errorf("%w\n%s", err, log.buf.Bytes())
	}
	t.PID, t.PprofAddr = t.CPUPIDs[0], paddr
	return t, d, nil
}

// startProcess runs cmd, which listens on addr, and returns once addr
// accepts connections, with the time from exec to then. The target's Close
// stops the process with SIGTERM, or SIGKILL after 5 s.
func startProcess(name string, cmd *exec.Cmd, addr string) (*Target, time.Duration, error) {
	// Wait must not hang on a pipe that an orphaned child holds.
	cmd.WaitDelay = 2 * time.Second
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, 0, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	for {
		if c, err := net.DialTimeout("tcp", addr, 50*time.Millisecond); err == nil {
			d := time.Since(start)
			c.Close()
			pid := cmd.Process.Pid
			return &Target{Name: name, URL: "http://" + addr, CPUPIDs: []int{pid}, close: func() {
				_ = cmd.Process.Signal(syscall.SIGTERM)
				select {
				case <-exited:
				case <-time.After(5 * time.Second):
					_ = cmd.Process.Kill()
					<-exited
				}
			}}, d, nil
		}
		select {
		case err := <-exited:
			return nil, 0, fmt.Errorf("%s exited before listening on %s: %v", name, addr, err)
		case <-time.After(200 * time.Microsecond):
		}
		if time.Since(start) > 10*time.Second {
			_ = cmd.Process.Kill()
			<-exited
			return nil, 0, fmt.Errorf("%s is not listening on %s after 10 s", name, addr)
		}
	}
}

// freePort returns a loopback address whose port was free a moment ago.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// headWriter keeps the first left bytes and drops the rest.
type headWriter struct {
	buf  bytes.Buffer
	left int
}

func (h *headWriter) Write(p []byte) (int, error) {
	n := min(len(p), h.left)
	h.buf.Write(p[:n])
	h.left -= n
	return len(p), nil
}

// The comparisons chutes-bench runs itself, by their names in the report.
const (
	// Bare is httputil.ReverseProxy with Go's default Transport (2 idle
	// connections per host): a proxy in ten lines.
	Bare = "bare-go"
	// BareTuned keeps 256 idle connections per host, as chutes-proxy does:
	// the floor of what net/http costs per proxied request.
	BareTuned = "bare-go-tuned"
	// TCPRelay copies bytes between the client's connection and one of its
	// own to the upstream, no HTTP at all: the floor of any
	// goroutine-per-connection Go proxy on the machine.
	TCPRelay = "go-tcp-relay"
)

// BareCommand is the hidden first argument with which chutes-bench serves a
// comparison itself: chutes-bench _bare ADDR UPSTREAM_URL NAME.
const BareCommand = "_bare"

// ServeBare is BareCommand's body: it serves the comparison name on addr
// until the process ends.
func ServeBare(addr, upstreamURL, name string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return serveBare(ln, upstreamURL, name)
}

// startBare serves a comparison from a subprocess of this executable when
// sub is set, so that it crosses a process boundary as the binary and nginx
// do (in one process, Go hands requests between goroutines without waking
// another process: cheaper than any real deployment); else from here.
func startBare(upstreamURL, name string, sub bool) (*Target, error) {
	if !sub {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		go func() { _ = serveBare(ln, upstreamURL, name) }()
		return &Target{Name: name, URL: "http://" + ln.Addr().String(), close: func() { _ = ln.Close() }}, nil
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, BareCommand, addr, upstreamURL, name)
	cmd.Stderr = os.Stderr
	t, _, err := startProcess(name, cmd, addr)
	return t, err
}

// serveBare serves the comparison name on ln until ln is closed.
func serveBare(ln net.Listener, upstreamURL, name string) error {
	u, err := url.Parse(upstreamURL)
	if err != nil {
		return err
	}
	if name == TCPRelay {
		for {
			c, err := ln.Accept()
			if err != nil {
				return err
			}
			go relay(c, u.Host)
		}
	}
	rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(u) }}
	if name == BareTuned {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 512, 256
		rp.Transport = tr
	}
	return (&http.Server{Handler: rp, ReadHeaderTimeout: 10 * time.Second}).Serve(ln)
}

// relay copies c to a new connection to addr and back until either side
// closes.
func relay(c net.Conn, addr string) {
	defer c.Close()
	up, err := net.Dial("tcp", addr)
	if err != nil {
		return
	}
	defer up.Close()
	go func() {
		_, _ = io.Copy(up, c)
		_ = up.(*net.TCPConn).CloseWrite()
	}()
	_, _ = io.Copy(c, up)
}

// External is a proxy someone else runs in front of the simulator; its CPU
// time is that of the processes holding its listening socket, found once it
// answers (see runner.check).
func External(name, base string) *Target {
	return &Target{Name: name, URL: strings.TrimSuffix(strings.TrimRight(base, "/"), "/v1"), external: true}
}
