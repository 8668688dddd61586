// Command chutes-bench measures what chutes-proxy costs against talking to
// the upstream directly, and against other proxies in the same run: it
// starts a fast fake Chutes on loopback, chutes-proxy in front of it
// (in-process, or the built binary with --binary), optionally a bare
// httputil.ReverseProxy (--with-bare) and proxies someone else runs
// (--target NAME=URL, in front of --fake-listen), then drives plain,
// streaming, failover and 1,000-stream loads through each, round after
// round, and prints a markdown report with every target of issue 7.
//
//	go run ./cmd/chutes-bench                       # in-process, ~1 minute
//	go build -o /tmp/cp ./cmd/chutes-proxy && go run ./cmd/chutes-bench --binary /tmp/cp --with-bare
//
// Everything stays on loopback and the run stops by itself.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/bench"
)

type envFlag []string

func (e *envFlag) String() string { return strings.Join(*e, " ") }

func (e *envFlag) Set(v string) error {
	if k, _, ok := strings.Cut(v, "="); !ok || k == "" {
		return fmt.Errorf("want KEY=VALUE, got %q", v)
	}
	*e = append(*e, v)
	return nil
}

type targetsFlag []*bench.Target

func (t *targetsFlag) String() string { return "" }

func (t *targetsFlag) Set(v string) error {
	name, url, ok := strings.Cut(v, "=")
	if !ok || name == "" || !strings.HasPrefix(url, "http://") {
		return fmt.Errorf("want NAME=http://HOST:PORT, got %q", v)
	}
	if name == "direct" || name == "chutes-proxy" || strings.HasPrefix(name, "bare-go") || name == "go-tcp-relay" {
		return fmt.Errorf("%q is taken; pick another name", name)
	}
	*t = append(*t, bench.External(name, url))
	return nil
}

func main() {
	if len(os.Args) >= 4 && os.Args[1] == bench.BareCommand {
		// chutes-bench runs its bare proxy as a subprocess of itself when
		// the proxy under test is a binary too.
		variant := ""
		if len(os.Args) > 4 {
			variant = os.Args[4]
		}
		if err := bench.ServeBare(os.Args[2], os.Args[3], variant); err != nil {
			fmt.Fprintln(os.Stderr, "chutes-bench bare proxy:", err)
			os.Exit(1)
		}
		return
	}
	os.Exit(run())
}

func run() int {
	var o bench.Options
	var targets targetsFlag
	var env envFlag
	var only string
	fs := flag.NewFlagSet("chutes-bench", flag.ContinueOnError)
	fs.StringVar(&o.Binary, "binary", "", "run this chutes-proxy binary as a subprocess (start-up, idle RSS, the proxy's own memory); default: in-process")
	fs.Var(&env, "binary-env", "KEY=VALUE added to the binary's environment, e.g. GOMAXPROCS=1; repeatable")
	fs.StringVar(&o.FakeListen, "fake-listen", "", "address of the fake upstream, e.g. 127.0.0.1:18080, so that another proxy can be pointed at it (default: a free port)")
	fs.Var(&targets, "target", "NAME=URL of another proxy already running in front of the fake upstream (--fake-listen); repeatable")
	fs.BoolVar(&o.WithBare, "with-bare", false, "also measure a bare httputil.ReverseProxy with Go's default Transport (a subprocess when --binary is given, like the binary)")
	fs.BoolVar(&o.WithTuned, "with-bare-tuned", false, "also measure the bare proxy with 256 idle connections per host, as chutes-proxy keeps: the floor of what net/http costs")
	fs.BoolVar(&o.WithRelay, "with-tcp-relay", false, "also measure a Go TCP relay (no HTTP: bytes copied between connections): the floor of any goroutine-per-connection Go proxy on this machine")
	fs.StringVar(&only, "only", "", "comma-separated scenarios to run: "+strings.Join(bench.Scenarios, ","))
	fs.IntVar(&o.Rounds, "rounds", 3, "rounds per scenario; figures are medians over them")
	fs.DurationVar(&o.Duration, "duration", 2*time.Second, "length of one target's round, plain scenarios")
	fs.IntVar(&o.Clients, "clients", 16, "concurrent clients of the plain scenario")
	fs.IntVar(&o.BodySize, "body", 1024, "request body size in bytes")
	fs.IntVar(&o.StreamClients, "stream-clients", 4, "concurrent streams of the streaming scenario")
	fs.DurationVar(&o.StreamDuration, "stream-duration", 2*time.Second, "length of one target's round, streaming")
	fs.IntVar(&o.Events, "events", 20, "events per stream")
	fs.DurationVar(&o.Gap, "gap", 2*time.Millisecond, "time between a stream's events")
	fs.IntVar(&o.FailoverCount, "failover-requests", 300, "requests per round and leg, failover scenarios")
	fs.IntVar(&o.LargeBodyMB, "large-mb", 1, "body size of the large-body scenario, MB")
	fs.IntVar(&o.LargeCount, "large-requests", 30, "requests per round, large-body scenario")
	fs.IntVar(&o.Concurrent, "streams", 1000, "concurrent streams of the concurrent scenario")
	fs.IntVar(&o.ConcurrentEvents, "streams-events", 20, "events per stream, concurrent scenario")
	fs.DurationVar(&o.ConcurrentGap, "streams-gap", 150*time.Millisecond, "time between events, concurrent scenario (streams must outlive the time it takes to open them all)")
	fs.IntVar(&o.Startups, "startups", 5, "start-ups of the binary to time (--binary only)")
	fs.StringVar(&o.CPUProfile, "cpuprofile", "", "write a CPU profile of the proxy under the plain load to this file (--binary: from the binary's serve --pprof; in-process: of this whole process)")
	fs.DurationVar(&o.ProfileTime, "profile-time", 5*time.Second, "length of the CPU profile")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "chutes-bench: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if o.Rounds < 1 || o.Clients < 1 || o.StreamClients < 1 || o.Events < 1 || o.FailoverCount < 1 || o.Concurrent < 1 {
		fmt.Fprintln(os.Stderr, "chutes-bench: counts must be at least 1")
		return 2
	}
	if only != "" {
		o.Only = map[string]bool{}
		for _, s := range strings.Split(only, ",") {
			s = strings.TrimSpace(s)
			known := false
			for _, k := range bench.Scenarios {
				known = known || k == s
			}
			if !known {
				fmt.Fprintf(os.Stderr, "chutes-bench: unknown scenario %q (known: %s)\n", s, strings.Join(bench.Scenarios, ","))
				return 2
			}
			o.Only[s] = true
		}
	}
	o.Externals = targets
	o.BinaryEnv = env
	o.Out, o.Log = os.Stdout, os.Stderr
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := bench.Run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "chutes-bench:", err)
		return 1
	}
	return 0
}
