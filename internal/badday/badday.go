// Package badday is chutes-bench's bad-day benchmark (issue 16): chat users,
// plain and streaming, through chutes-proxy in front of the Chutes
// simulator while the chain's first model has a bad day (a miner that
// hangs, 503 storms, 429 bursts, flapping, mid-stream cuts, Chutes wholly
// unreachable, a slow reasoning model), each scenario run with the proxy's
// defaults, with hedging, and through a baseline that only has fixed
// time-outs and "try the next model", in the same run. Everything runs in
// this process on loopback, with times a tenth of real ones (Scale).
package badday

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"
)

// Options are a bad-day run's. Defaults gives the documented ones.
type Options struct {
	// Only names the scenarios to run; empty means all.
	Only []string
	// Setups names the setups to run; empty means Setups and each
	// scenario's own.
	Setups []string
	// Users chat at once, half plain, half streaming.
	Users    int
	Timeline Timeline
	// Parallel is how many runs play at once (each has its own simulator
	// and proxy).
	Parallel int
	Seed     uint64
	// Sweep runs the hang and reasoning scenarios again for each
	// cutoff_factor and cutoff_floor of the grid, instead of the table.
	Sweep bool
	// Out gets the markdown report, Log the progress; nil discards.
	Out, Log io.Writer
}

// Defaults are the options of the documented run.
func Defaults() Options {
	return Options{
		Users:    8,
		Timeline: Timeline{Warmup: 3 * time.Second, Bad: 20 * time.Second, Recovery: 8 * time.Second},
		Parallel: 4,
		Seed:     16,
	}
}

// SweepFactors and SweepFloors are the sweep's grid (floors in bench time).
var (
	SweepFactors = []float64{2, 3, 5}
	SweepFloors  = []time.Duration{400 * time.Millisecond, 800 * time.Millisecond, 1500 * time.Millisecond, 2500 * time.Millisecond}
)

type job struct {
	sc    Scenario
	setup Setup
}

// Run plays the chosen scenarios through the chosen setups, writes the
// report and returns the runs.
func Run(ctx context.Context, o Options) ([]*Result, error) {
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	files, err := loadScenarios()
	if err != nil {
		return nil, err
	}
	jobs, err := plan(o)
	if err != nil {
		return nil, err
	}
	results := make([]*Result, len(jobs))
	errs := make([]error, len(jobs))
	sem := make(chan struct{}, max(o.Parallel, 1))
	var wg sync.WaitGroup
	start := time.Now()
	for i, j := range jobs {
		wg.Go(func() {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				errs[i] = ctx.Err()
				return
			}
			defer func() { <-sem }()
			results[i], errs[i] = runOne(ctx, j.sc, j.setup, o.Timeline, o.Users, o.Seed, files)
			if errs[i] == nil {
				f := results[i].Figures()
				fmt.Fprintf(o.Log, "badday: %-9s %-22s %3d replies, %d lost, TTFT p95 %s, %.2f requests/served (%s)\n",
					j.sc.Name, j.setup.Name, f.Replies, f.Lost, secs(f.P95), f.PerServed, time.Since(start).Round(time.Second))
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("%s through %s: %w", jobs[i].sc.Name, jobs[i].setup.Name, err)
		}
	}
	if o.Sweep {
		sweepReport(o.Out, results)
	} else {
		report(o.Out, results, o.Timeline, o.Users)
	}
	return results, nil
}

// plan lists the runs: every chosen scenario through every chosen setup,
// or the sweep's grid.
func plan(o Options) ([]job, error) {
	var scs []Scenario
	for _, s := range Scenarios {
		if len(o.Only) == 0 || slices.Contains(o.Only, s.Name) {
			scs = append(scs, s)
		}
	}
	for _, n := range o.Only {
		if _, ok := Find(n); !ok {
			return nil, fmt.Errorf("no scenario %q", n)
		}
	}
	for _, n := range o.Setups {
		if !slices.ContainsFunc(append(slices.Clone(Setups), ProxyResume), func(s Setup) bool { return s.Name == n }) {
			return nil, fmt.Errorf("no setup %q", n)
		}
	}
	var jobs []job
	if o.Sweep {
		for _, k := range SweepFactors {
			for _, fl := range SweepFloors {
				s := Proxy
				s.Name, s.Factor, s.Floor = fmt.Sprintf("k=%g floor=%s", k, fl), k, fl
				for _, sc := range scs {
					if sc.Name == "hang" || sc.Name == "reasoning" {
						jobs = append(jobs, job{sc, s})
					}
				}
			}
		}
		return jobs, nil
	}
	for _, sc := range scs {
		for _, s := range append(slices.Clone(Setups), sc.Setups...) {
			if len(o.Setups) == 0 || slices.Contains(o.Setups, s.Name) {
				jobs = append(jobs, job{sc, s})
			}
		}
	}
	return jobs, nil
}
