package bench

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"
)

// machine describes where a run happened.
func machine() string {
	cpu := "unknown CPU"
	b, _ := os.ReadFile("/proc/cpuinfo")
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			cpu = strings.TrimSpace(v)
			break
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
	switch {
	case d > 0:
		return "+" + us(d)
	case d < 0:
		return "−" + us(-d)
	}
	return "±0"
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

// added is "" for the base leg, else the signed differences.
func added(a *Agg, d ...time.Duration) []any {
	out := make([]any, len(d))
	for i, x := range d {
		out[i] = ""
		if !a.base {
			out[i] = signed(x)
		}
	}
	return out
}

func (r *runner) report(w io.Writer) {
	o, res := r.o, &r.res
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	mode := "in-process"
	if o.Binary != "" {
		mode = "binary " + o.Binary
	}
	var names []string
	for _, t := range r.targets[1:] {
		names = append(names, t.Name+" "+t.URL)
	}
	p("# chutes-bench report\n\n- machine: %s\n- chutes-proxy: %s; simulator %s\n- targets: %s\n", machine(), mode, r.up.URL, strings.Join(names, ", "))
	p("- %d rounds, each target in turn (order reversed every other round); medians of the rounds; added = target − direct in the same round\n\n", o.Rounds)

	plain := func(title string, m map[string]*Agg) {
		if m == nil {
			return
		}
		p("## %s\n\n| target | req/s | p50 | p99 | added p50 | added p99 | throughput vs direct | CPU per request | errors |\n|%s\n", title, strings.Repeat(" --- |", 9))
		for _, a := range r.ordered(m) {
			add := added(a, a.AddP50, a.AddP99)
			p("| %s | %.0f | %s | %s | %s | %s | %.2f | %s | %s |\n", a.Name, a.RPS, us(a.P50), us(a.P99), add[0], add[1], a.Ratio, cpuCell(a.CPUPerReq), errCell(a))
		}
		p("\n")
	}
	plain(fmt.Sprintf("Plain chat, %d clients (%s a round, %d-byte body)", o.Clients, o.Duration, bodySize), res.plain16)
	plain(fmt.Sprintf("Plain chat, 1 client (%s a round)", o.Duration), res.plain1)

	if res.stream != nil {
		p("## Streaming, %d clients, %d events %s apart (%s a round)\n\n", o.StreamClients, o.Events, o.Gap, o.StreamDuration)
		p("Event delay: from the upstream's write (stamp in the event) to the client having the event.\n\n")
		p("| target | streams/s | event delay p50 | p99 | added p50 | added p99 | events | batched with the previous | CPU per event | errors |\n|%s\n", strings.Repeat(" --- |", 10))
		for _, a := range r.ordered(res.stream) {
			add := added(a, a.AddEvP50, a.AddEvP99)
			p("| %s | %.0f | %s | %s | %s | %s | %d | %d | %s | %s |\n", a.Name, a.RPS, us(a.EvP50), us(a.EvP99), add[0], add[1], a.Events, a.Coalesced, cpuCell(a.CPUPerEvent), errCell(a))
		}
		p("\n")
	}

	r.reportAssemble(p)

	if res.refused != nil || res.breaker != nil {
		p("## Failover, 1 client, %d requests a round\n\n", o.FailoverCount)
		p("| first model | compared with | p50 | p99 | added p50 | added p99 | upstream calls to the first model | errors |\n|%s\n", strings.Repeat(" --- |", 8))
		row := func(first string, a *Agg, calls string) {
			p("| %s | %s | %s | %s | %s | %s | %s | %s |\n", first, a.Name, us(a.P50), us(a.P99), signed(a.AddP50), signed(a.AddP99), calls, errCell(a))
		}
		if a := res.refused; a != nil {
			row(ModelRefused+" (connection reset)", a, fmt.Sprintf("%d of %d requests", res.refusedCalls, res.refusedReqs))
		}
		if res.breaker != nil {
			for _, a := range []*Agg{res.breaker, res.breakerVsAlias} {
				row(ModelDead+" (breaker open)", a, fmt.Sprint(res.deadCalls))
			}
		}
		p("\n")
	}

	if res.conc != nil {
		p("## %d concurrent streams (%d events %s apart)\n\n| target | streams ok | errors | event delay p50 | p99 |\n|%s\n", o.Concurrent, o.ConcurrentEvents, o.ConcurrentGap, strings.Repeat(" --- |", 5))
		for _, a := range r.ordered(res.conc) {
			p("| %s | %d | %s | %s | %s |\n", a.Name, a.N, errCell(a), us(a.EvP50), us(a.EvP99))
		}
		if res.concRSS != 0 {
			p("\nchutes-proxy while all were open, per stream: heap %s, goroutine stacks %s, RSS %s\n", kb(res.concHeap), kb(res.concStack), kb(res.concRSS))
		}
		p("\n")
	}

	p("## Targets of issue 7\n\n| what | target | measured | result |\n| --- | --- | --- | --- |\n")
	row := func(what, target, got, result string) { p("| %s | %s | %s | %s |\n", what, target, got, result) }
	const needBinary = "n/a in-process: run with --binary"
	if a := r.chutesAgg(res.plain16); a != nil {
		got, ok := fmt.Sprintf("%.2f", a.Ratio), a.Ratio >= 0.75
		if n := r.nginx(res.plain16); n != nil {
			got += fmt.Sprintf(" (%s: %.2f)", n.Name, n.Ratio)
			ok = ok && a.Ratio >= n.Ratio
		} else {
			got += " (no nginx target in this run)"
		}
		row(fmt.Sprintf("plain chat, %d clients: proxied / direct throughput", o.Clients), "≥ 0.75, and ≥ nginx's", got, passFail(ok))
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
			fmt.Sprintf("%s p50 vs proxied second model (%s vs the second model by alias, also rewritten); %d upstream calls",
				signed(a.AddP50), signed(res.breakerVsAlias.AddP50), res.deadCalls),
			passFail(a.AddP50 <= 50*time.Microsecond && res.deadCalls == 0 && a.Errors == 0))
	}
	if res.idleRSS > 0 {
		row("memory: idle RSS", "≤ 20 MB", mb(float64(res.idleRSS))+" (after start-up, no request yet)", passFail(res.idleRSS <= 20<<20))
	} else {
		row("memory: idle RSS", "≤ 20 MB", needBinary, "n/a")
	}
	if a := r.chutesAgg(res.conc); a != nil {
		if res.concHeap != 0 {
			row("memory: heap per open stream", "≤ 64 KB", kb(res.concHeap)+" (stacks "+kb(res.concStack)+")", passFail(res.concHeap <= 64<<10))
		} else {
			row("memory: heap per open stream", "≤ 64 KB", needBinary+" (and serve --pprof)", "n/a")
		}
		row(fmt.Sprintf("memory: %d concurrent streams, zero errors", o.Concurrent), "0 errors",
			fmt.Sprintf("%d ok, %d errors", a.N, a.Errors), passFail(a.Errors == 0 && a.N == o.Concurrent))
	}
	if res.peakRSS > 0 {
		row("memory: peak RSS of the proxy over the run", "(reported)", mb(float64(res.peakRSS)), "")
	}
	if a := res.large; a != nil {
		got, result := needBinary+" (and serve --pprof)", "n/a"
		if res.largeAlloc > 0 {
			got = fmt.Sprintf("%s allocated per %s request whose model is rewritten (%.2f× the body)",
				mb(res.largeAlloc), mb(largeSize), res.largeAlloc/largeSize)
			result = passFail(res.largeAlloc <= 1.25*largeSize && a.Errors == 0)
		}
		got += "; added p50 " + signed(a.AddP50)
		if a.Errors > 0 {
			got += "; " + errCell(a)
		}
		row("body handling: a 1 MB body copied at most once", "≤ 1 copy (allocated ≤ 1.25× body)", got, result)
	}
	if s := res.startups; len(s) > 0 && o.on("startup") {
		var ss []string
		for _, d := range s {
			ss = append(ss, us(d))
		}
		row("start-up: listening from exec", "< 100 ms", fmt.Sprintf("%s median of %d (%s)", us(median(s)), len(s), strings.Join(ss, ", ")), passFail(median(s) < 100*time.Millisecond))
	} else if o.on("startup") {
		row("start-up: listening from exec", "< 100 ms", needBinary, "n/a")
	}
	p("\n")
	if o.CPUProfile != "" {
		p("CPU profile: the binary's /debug/pprof/profile, %s → %s (go tool pprof -top %s)\n", o.ProfileTime, o.CPUProfile, o.CPUProfile)
	}
}

// ordered returns a scenario's figures in target order.
func (r *runner) ordered(m map[string]*Agg) []*Agg {
	var out []*Agg
	for _, t := range r.targets {
		if a, ok := m[t.Name]; ok {
			out = append(out, a)
		}
	}
	return out
}

func (r *runner) chutesAgg(m map[string]*Agg) *Agg { return m[r.chutes.Name] }

// nginx is the first target whose name says nginx, nil when none does.
func (r *runner) nginx(m map[string]*Agg) *Agg {
	for _, t := range r.targets {
		if strings.Contains(t.Name, "nginx") {
			return m[t.Name]
		}
	}
	return nil
}
