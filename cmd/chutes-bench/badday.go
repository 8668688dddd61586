package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/chutes-proxy/chutes-proxy/internal/badday"
)

// badDayCommand is chutes-bench's first argument for the bad-day benchmark.
const badDayCommand = "badday"

// runBadDay runs `chutes-bench badday [flags]`: every bad-day scenario
// through the proxy's defaults, hedging and the baseline, in this process,
// and prints the markdown report.
func runBadDay(args []string) int {
	o := badday.Defaults()
	var only, setups string
	fs := flag.NewFlagSet("chutes-bench badday", flag.ContinueOnError)
	var names []string
	for _, s := range badday.Scenarios {
		names = append(names, s.Name)
	}
	fs.StringVar(&only, "only", "", "comma-separated scenarios: "+strings.Join(names, ","))
	fs.StringVar(&setups, "setups", "", "comma-separated setups: proxy,proxy+hedge,baseline,proxy+resume (default: all a scenario has)")
	fs.IntVar(&o.Users, "users", o.Users, "users chatting at once, half plain, half streaming")
	fs.DurationVar(&o.Timeline.Warmup, "warmup", o.Timeline.Warmup, "every model healthy first, for the learned cut-off's 20 samples")
	fs.DurationVar(&o.Timeline.Bad, "bad", o.Timeline.Bad, "how long the scenario plays; the figures are of the replies sent then")
	fs.DurationVar(&o.Timeline.Recovery, "recovery", o.Timeline.Recovery, "model-a healthy again, to see when it is used")
	fs.IntVar(&o.Parallel, "parallel", o.Parallel, "runs at once (each its own simulator and proxy)")
	fs.Uint64Var(&o.Seed, "seed", o.Seed, "seed of the users' and the upstream's random draws")
	fs.BoolVar(&o.Sweep, "sweep", false, "instead: the hang and reasoning scenarios for each cutoff_factor and cutoff_floor of a grid")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "chutes-bench badday: unexpected arguments %q\n", fs.Args())
		return 2
	}
	o.Only, o.Setups = split(only), split(setups)
	o.Out, o.Log = os.Stdout, os.Stderr
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := badday.Run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "chutes-bench badday:", err)
		return 1
	}
	return 0
}

func split(s string) []string {
	var out []string
	for v := range strings.SplitSeq(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}
