// Command chutes-bench measures what chutes-proxy costs against talking to
// the upstream directly, and against other proxies in the same run: it
// serves the Chutes simulator on loopback, chutes-proxy in front of it
// (in-process, or the built binary with --binary), optionally bare Go
// proxies and a Go TCP relay, and proxies someone else runs (--target
// NAME=URL, in front of --fake-listen), then drives plain, streaming,
// failover and 1,000-stream loads through each, round after round, and
// prints a markdown report with every target of issue 7. The assemble
// scenario also runs chutes-proxy a second time with stream_plain = false,
// to give what assembling a plain reply from its stream costs, per reply and
// per token.
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

	"github.com/chutes-proxy/chutes-proxy/internal/bench"
)

// listFlag collects a repeatable flag's values, each checked by check.
type listFlag struct {
	vals  []string
	check func(string) error
}

func (l *listFlag) String() string { return strings.Join(l.vals, " ") }

func (l *listFlag) Set(v string) error {
	if err := l.check(v); err != nil {
		return err
	}
	l.vals = append(l.vals, v)
	return nil
}

func main() {
	if len(os.Args) == 5 && os.Args[1] == bench.BareCommand {
		// With --binary, chutes-bench runs its comparisons as subprocesses
		// of itself, so that they cross a process boundary too.
		if err := bench.ServeBare(os.Args[2], os.Args[3], os.Args[4]); err != nil {
			fmt.Fprintln(os.Stderr, "chutes-bench comparison:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == badDayCommand {
		os.Exit(runBadDay(os.Args[2:]))
	}
	os.Exit(run())
}

func run() int {
	o := bench.Defaults()
	env := listFlag{check: func(v string) error {
		if k, _, ok := strings.Cut(v, "="); !ok || k == "" {
			return fmt.Errorf("want KEY=VALUE, got %q", v)
		}
		return nil
	}}
	targets := listFlag{check: func(v string) error {
		name, url, ok := strings.Cut(v, "=")
		if !ok || name == "" || !strings.HasPrefix(url, "http://") {
			return fmt.Errorf("want NAME=http://HOST:PORT, got %q", v)
		}
		if name == "direct" || name == "chutes-proxy" || name == bench.Bare || name == bench.BareTuned || name == bench.TCPRelay {
			return fmt.Errorf("%q is taken; pick another name", name)
		}
		return nil
	}}
	var only string
	fs := flag.NewFlagSet("chutes-bench", flag.ContinueOnError)
	fs.StringVar(&o.Binary, "binary", "", "run this chutes-proxy binary as a subprocess (start-up, idle RSS, the proxy's own memory); default: in-process")
	fs.Var(&env, "binary-env", "KEY=VALUE added to the binary's environment, e.g. GOMAXPROCS=1; repeatable")
	fs.StringVar(&o.FakeListen, "fake-listen", "", "address of the simulator, e.g. 127.0.0.1:18080, so that another proxy can be pointed at it (default: a free port)")
	fs.Var(&targets, "target", "NAME=URL of another proxy already running in front of the simulator (--fake-listen); repeatable")
	fs.BoolVar(&o.WithBare, "with-bare", false, "also measure "+bench.Bare+": httputil.ReverseProxy with Go's default Transport")
	fs.BoolVar(&o.WithTuned, "with-bare-tuned", false, "also measure "+bench.BareTuned+": the same with 256 idle connections per host, as chutes-proxy keeps")
	fs.BoolVar(&o.WithRelay, "with-tcp-relay", false, "also measure "+bench.TCPRelay+": bytes copied between connections, no HTTP, the floor of a Go proxy here")
	fs.StringVar(&only, "only", "", "comma-separated scenarios to run: "+strings.Join(bench.Scenarios, ","))
	fs.IntVar(&o.Rounds, "rounds", o.Rounds, "rounds per scenario; figures are medians over them")
	fs.DurationVar(&o.Duration, "duration", o.Duration, "length of one target's round, plain scenarios")
	fs.DurationVar(&o.StreamDuration, "stream-duration", o.StreamDuration, "length of one target's round, streaming")
	fs.IntVar(&o.FailoverCount, "failover-requests", o.FailoverCount, "requests per round and leg, failover scenarios")
	fs.IntVar(&o.Concurrent, "streams", o.Concurrent, "streams open at once, concurrent scenario")
	fs.IntVar(&o.Startups, "startups", o.Startups, "start-ups of the binary to time (--binary only)")
	fs.StringVar(&o.CPUProfile, "cpuprofile", "", "write a CPU profile of the binary under the plain16 load to this file (--binary, from its serve --pprof)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "chutes-bench: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if only != "" {
		o.Only = map[string]bool{}
		for s := range strings.SplitSeq(only, ",") {
			o.Only[strings.TrimSpace(s)] = true
		}
	}
	for _, t := range targets.vals {
		name, url, _ := strings.Cut(t, "=")
		o.Externals = append(o.Externals, bench.External(name, url))
	}
	o.BinaryEnv = env.vals
	o.Out, o.Log = os.Stdout, os.Stderr
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := bench.Run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "chutes-bench:", err)
		return 1
	}
	return 0
}
