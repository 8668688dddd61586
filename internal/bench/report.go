package bench

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"strings"
	"time"
)

// Machine describes where a run happened.
func Machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("%d CPUs (%s), GOMAXPROCS %d, %s %s/%s", runtime.NumCPU(), cpu, runtime.GOMAXPROCS(0), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func us(d time.Duration) string {
	switch {
	case d == 0:
		return "0"
	case d >= 10*time.Millisecond || d <= -10*time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/1e6)
	case d >= time.Millisecond || d <= -time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.0f µs", float64(d)/1e3)
	}
}

func signed(d time.Duration) string {
	if d > 0 {
		return "+" + us(d)
	}
	if d == 0 {
		return "±0"
	}
	return "−" + us(-d)
}

func mb(b float64) string { return fmt.Sprintf("%.1f MB", b/(1<<20)) }
func kb(b float64) string { return fmt.Sprintf("%.1f KB", b/(1<<10)) }

func passFail(ok bool) string {
	if ok {
		return "**pass**"
	}
	return "**FAIL**"
}

// cpuCell is a CPU time per unit, "–" when the target shares this process.
func cpuCell(d time.Duration) string {
	if d <= 0 {
		return "–"
	}
	return us(d)
}

func errCell(a *Agg) string {
	if a.Errors == 0 {
		return "0"
	}
	return fmt.Sprintf("⚠ %d: %s", a.Errors, strings.ReplaceAll(a.FirstErr, "|", "/"))
}

// ordered returns a scenario's aggregates in target order.
func (r *runner) ordered(m map[string]*Agg) []*Agg {
	var out []*Agg
	for _, t := range r.targets {
		if a, ok := m[t.Name]; ok {
			out = append(out, a)
		}
	}
	return out
}

func (r *runner) report(w io.Writer) {
	o, res := r.o, &r.res
	fmt.Fprintf(w, "# chutes-bench report\n\n")
	fmt.Fprintf(w, "- machine: %s\n", Machine())
	fmt.Fprintf(w, "- chutes-proxy: %s; fake upstream %s\n", res.mode, r.up.URL)
	var names []string
	for _, t := range r.targets[1:] {
		names = append(names, t.Name+" "+t.URL)
	}
	fmt.Fprintf(w, "- targets: %s\n", strings.Join(names, ", "))
	fmt.Fprintf(w, "- %d rounds, each target in turn (order reversed every other round); medians of the rounds; added = target − direct in the same round\n\n", o.Rounds)

	plain := func(title string, m map[string]*Agg) {
		if m == nil {
			return
		}
		fmt.Fprintf(w, "## %s\n\n| target | req/s | p50 | p99 | added p50 | added p99 | throughput vs direct | CPU per request | errors |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n", title)
		for _, a := range r.ordered(m) {
			add50, add99, ratio := signed(a.AddP50), signed(a.AddP99), fmt.Sprintf("%.2f", a.Ratio)
			if a.base {
				add50, add99, ratio = "", "", "1"
			}
			fmt.Fprintf(w, "| %s | %.0f | %s | %s | %s | %s | %s | %s | %s |\n", a.Name, a.RPS, us(a.P50), us(a.P99), add50, add99, ratio, cpuCell(a.CPUPerReq), errCell(a))
		}
		fmt.Fprintln(w)
	}
	plain(fmt.Sprintf("Plain chat, %d clients (%s a round, %d-byte body)", o.Clients, o.Duration, o.BodySize), res.plain16)
	plain(fmt.Sprintf("Plain chat, 1 client (%s a round)", o.Duration), res.plain1)

	if res.stream != nil {
		fmt.Fprintf(w, "## Streaming, %d clients, %d events %s apart (%s a round)\n\n", o.StreamClients, o.Events, o.Gap, o.StreamDuration)
		fmt.Fprintf(w, "Event delay: from the upstream's write (stamp in the event) to the client having the event.\n\n")
		fmt.Fprintf(w, "| target | streams/s | event delay p50 | p99 | added p50 | added p99 | events | batched with the previous | CPU per event | errors |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
		for _, a := range r.ordered(res.stream) {
			add50, add99 := signed(a.AddEvP50), signed(a.AddEvP99)
			if a.base {
				add50, add99 = "", ""
			}
			fmt.Fprintf(w, "| %s | %.0f | %s | %s | %s | %s | %d | %d | %s | %s |\n", a.Name, a.RPS, us(a.EvP50), us(a.EvP99), add50, add99, a.Events, a.Coalesced, cpuCell(a.CPUPerEvent), errCell(a))
		}
		fmt.Fprintln(w)
	}

	if res.refused != nil || res.breaker != nil {
		fmt.Fprintf(w, "## Failover, 1 client, %d requests a round\n\n", o.FailoverCount)
		fmt.Fprintf(w, "| first model | compared with | p50 | p99 | added p50 | added p99 | upstream calls to the first model | errors |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n")
		if a := res.refused; a != nil {
			fmt.Fprintf(w, "| %s (connection reset) | %s | %s | %s | %s | %s | %d of %d requests | %s |\n", ModelRefused, a.Name, us(a.P50), us(a.P99), signed(a.AddP50), signed(a.AddP99), res.refusedCalls, res.refusedReqs, errCell(a))
		}
		for _, a := range []*Agg{res.breaker, res.breakerVsAlias, res.breakerVsDirect} {
			if a != nil {
				fmt.Fprintf(w, "| %s (breaker open) | %s | %s | %s | %s | %s | %d | %s |\n", ModelDead, a.Name, us(a.P50), us(a.P99), signed(a.AddP50), signed(a.AddP99), res.deadCalls, errCell(a))
			}
		}
		fmt.Fprintln(w)
	}

	if res.conc != nil {
		fmt.Fprintf(w, "## %d concurrent streams (%d events %s apart)\n\n", o.Concurrent, o.ConcurrentEvents, o.ConcurrentGap)
		fmt.Fprintf(w, "| target | streams ok | errors | event delay p50 | p99 |\n| --- | --- | --- | --- | --- |\n")
		for _, a := range r.ordered(res.conc) {
			fmt.Fprintf(w, "| %s | %d | %s | %s | %s |\n", a.Name, a.N, errCell(a), us(a.EvP50), us(a.EvP99))
		}
		fmt.Fprintf(w, "\nchutes-proxy while all were open, per stream: heap %s, goroutine stacks %s", kb(res.concHeap), kb(res.concStack))
		if r.chutes.PID != 0 {
			fmt.Fprintf(w, ", RSS %s", kb(res.concRSS))
		} else {
			fmt.Fprintf(w, " (in-process: proxied run − direct run)")
		}
		fmt.Fprintf(w, "\n\n")
	}

	fmt.Fprintf(w, "## Targets of issue 7\n\n| what | target | measured | result |\n| --- | --- | --- | --- |\n")
	row := func(what, target, got, result string) {
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", what, target, got, result)
	}
	needBinary := "n/a in-process: run with --binary"
	if a := r.chutesAgg(res.plain16); a != nil {
		nginx := r.externalRatio(res.plain16)
		target := "≥ 0.75, and ≥ nginx's"
		got := fmt.Sprintf("%.2f", a.Ratio)
		ok := a.Ratio >= 0.75
		if nginx != nil {
			got += fmt.Sprintf(" (%s: %.2f)", nginx.Name, nginx.Ratio)
			ok = ok && a.Ratio >= nginx.Ratio
		} else {
			got += " (no nginx target in this run)"
		}
		if b, ok2 := res.plain16["bare-go"]; ok2 {
			got += fmt.Sprintf(" (bare-go: %.2f)", b.Ratio)
		}
		row(fmt.Sprintf("plain chat, %d clients: proxied / direct throughput", o.Clients), target, got, passFail(ok))
		row(fmt.Sprintf("plain chat, %d clients: added latency p50 / p99", o.Clients), "≤ 150 µs / ≤ 1 ms",
			signed(a.AddP50)+" / "+signed(a.AddP99), passFail(a.AddP50 <= 150*time.Microsecond && a.AddP99 <= time.Millisecond))
	}
	if a := r.chutesAgg(res.plain1); a != nil {
		row("plain chat, 1 client: added latency p50", "≤ 60 µs", signed(a.AddP50), passFail(a.AddP50 <= 60*time.Microsecond))
	}
	if a := r.chutesAgg(res.stream); a != nil {
		row("streaming: added delay per SSE event p50 / p99", "≤ 50 µs / ≤ 500 µs", signed(a.AddEvP50)+" / "+signed(a.AddEvP99),
			passFail(a.AddEvP50 <= 50*time.Microsecond && a.AddEvP99 <= 500*time.Microsecond))
		d := res.stream["direct"]
		row("streaming: every event flushed on its own", "no batching beyond direct's",
			fmt.Sprintf("%d of %d batched (direct: %d of %d)", a.Coalesced, a.Events, d.Coalesced, d.Events),
			passFail(a.Coalesced <= d.Coalesced+a.Events/1000 && a.Errors == 0))
	}
	if a := res.refused; a != nil {
		row("failover, first model's upstream refuses connections (reset)", "≤ 5 ms added vs second model direct",
			signed(a.AddP50)+" p50, "+signed(a.AddP99)+" p99", passFail(a.AddP50 <= 5*time.Millisecond && a.Errors == 0))
	}
	if a := res.breaker; a != nil {
		row("failover, first model's breaker open", "≤ 50 µs added, no upstream call",
			fmt.Sprintf("%s p50 vs proxied second model (%s vs the second model by alias, also rewritten; %s vs direct); %d upstream calls",
				signed(a.AddP50), signed(res.breakerVsAlias.AddP50), signed(res.breakerVsDirect.AddP50), res.deadCalls),
			passFail(a.AddP50 <= 50*time.Microsecond && res.deadCalls == 0 && a.Errors == 0))
	}
	if r.chutes.PID != 0 && res.idleRSS > 0 {
		row("memory: idle RSS", "≤ 20 MB", mb(float64(res.idleRSS))+" (after start-up, no request yet)", passFail(res.idleRSS <= 20<<20))
	} else {
		row("memory: idle RSS", "≤ 20 MB", needBinary, "n/a")
	}
	if res.conc != nil {
		a := r.chutesAgg(res.conc)
		if res.haveHeap {
			row("memory: heap per open stream", "≤ 64 KB", kb(res.concHeap)+" (stacks "+kb(res.concStack)+")", passFail(res.concHeap <= 64<<10))
		} else {
			row("memory: heap per open stream", "≤ 64 KB", "no heap figure (binary without --pprof); RSS "+kb(res.concRSS), "n/a")
		}
		row(fmt.Sprintf("memory: %d concurrent streams, zero errors", o.Concurrent), "0 errors",
			fmt.Sprintf("%d ok, %d errors", a.N, a.Errors), passFail(a.Errors == 0 && a.N == o.Concurrent))
	}
	if res.peakRSS > 0 && r.chutes.PID != 0 {
		row("memory: peak RSS of the proxy over the run", "(reported)", mb(float64(res.peakRSS)), "")
	}
	if res.largeBody > 0 {
		got := "n/a (binary without --pprof)"
		result := "n/a"
		if res.largeAlloc >= 0 {
			got = fmt.Sprintf("%s allocated per %s request whose model is rewritten (%.2f× the body); added p50 %s",
				mb(res.largeAlloc), mb(float64(res.largeBody)), res.largeAlloc/float64(res.largeBody), signed(res.largeAdded))
			result = passFail(res.largeAlloc <= 1.25*float64(res.largeBody) && res.largeErr == "")
		}
		if res.largeErr != "" {
			got += "; " + res.largeErr
		}
		row("body handling: a 1 MB body copied at most once", "≤ 1 copy (allocated ≤ 1.25× body)", got, result)
	}
	if r.chutes.PID != 0 && res.startup > 0 {
		var ss []string
		for _, d := range res.startups {
			ss = append(ss, us(d))
		}
		row("start-up: listening from exec", "< 100 ms", fmt.Sprintf("%s median of %d (%s)", us(res.startup), len(res.startups), strings.Join(ss, ", ")), passFail(res.startup < 100*time.Millisecond))
	} else {
		row("start-up: listening from exec", "< 100 ms", needBinary, "n/a")
	}
	fmt.Fprintln(w)
	if res.profile != "" {
		fmt.Fprintf(w, "CPU profile: %s → %s (go tool pprof -top %s)\n", res.profile, o.CPUProfile, o.CPUProfile)
	}
}

func (r *runner) chutesAgg(m map[string]*Agg) *Agg {
	if m == nil {
		return nil
	}
	return m[r.chutes.Name]
}

// externalRatio picks the nginx target (or the first external one).
func (r *runner) externalRatio(m map[string]*Agg) *Agg {
	var ext []*Agg
	for _, t := range r.targets {
		if t.Kind == KindExternal {
			if a, ok := m[t.Name]; ok {
				ext = append(ext, a)
			}
		}
	}
	sort.SliceStable(ext, func(i, j int) bool {
		return strings.Contains(ext[i].Name, "nginx") && !strings.Contains(ext[j].Name, "nginx")
	})
	if len(ext) == 0 {
		return nil
	}
	return ext[0]
}
