package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/assemble"
	"github.com/chutes-proxy/chutes-proxy/internal/payload"
)

// Names of the assemble scenario's legs.
const (
	legPlainOn  = "chutes-proxy, stream_plain on"
	legPlainOff = "chutes-proxy, stream_plain = false"
)

// assembleResult is what stream_plain costs a plain reply: the same proxy
// with it on (the default: the chat goes upstream as a stream and is
// assembled) and off (the plain answer is forwarded as it is).
type assembleResult struct {
	// The simulator's stream for one plain reply, as stream_plain asks for
	// it, against its plain answer.
	events, tokens          int
	streamBytes, plainBytes int
	many, one               map[string]*Agg // by leg; at Options.Clients and at 1 client
	cpuMany, cpuOne         time.Duration   // on − off, CPU per reply; 0 = unknown
	onVsOffMany, onVsOffOne *Agg            // on against off in the same rounds
	asmPerReply             time.Duration   // the assembler alone, this process
	asmAllocs               float64         // allocations per reply, same
}

// assembleScenario measures stream_plain's cost: a second chutes-proxy with
// stream_plain = false (in this process, or a second instance of the
// binary) next to the run's, plain chats through both and direct, round
// after round; and the assembler alone on the simulator's stream.
func (r *runner) assembleScenario() error {
	res := &assembleResult{}
	direct := r.targets[0]
	body := chatBody(ModelOK, false, bodySize)
	pb, err := payload.Parse(body)
	if err != nil {
		return err
	}
	streamed, err := pb.Streamed()
	if err != nil {
		return err
	}
	events, n, err := r.c.sse(r.ctx, chatURL(direct), streamed.Raw)
	if err != nil {
		return fmt.Errorf("the simulator's stream: %w", err)
	}
	res.events, res.streamBytes = len(events), n
	plain, err := r.c.read(r.ctx, chatURL(direct), body)
	if err != nil {
		return fmt.Errorf("the simulator's plain answer: %w", err)
	}
	res.plainBytes = len(plain)
	if res.tokens, err = assembleTokens(events); err != nil {
		return err
	}
	// Before the second proxy starts: nothing else allocates meanwhile.
	res.asmPerReply, res.asmAllocs = assembleCost(events, min(r.o.Duration, 500*time.Millisecond))

	var off *Target
	if r.o.Binary != "" {
		b, err := newBinary(r.o.Binary, r.o.BinaryEnv, r.dir, r.up.URL, false)
		if err != nil {
			return err
		}
		if off, _, err = b.start(); err != nil {
			return fmt.Errorf("the binary with stream_plain = false: %w", err)
		}
	} else if off, err = startInProcess(r.dir, r.up.URL, false); err != nil {
		return err
	}
	defer off.Close()
	off.Name = legPlainOff
	on := *r.chutes // the run's proxy under another name; closed by Run
	on.Name = legPlainOn
	if err := r.checkStreamPlain(&on, off, body); err != nil {
		return err
	}
	targets := []*Target{direct, &on, off}
	many := r.targetRounds(targets, r.plainRun(r.o.Clients))
	one := r.targetRounds(targets, r.plainRun(1))
	res.many, res.one = aggregateAll(many), aggregateAll(one)
	res.onVsOffMany = aggregate("on vs off", many[legPlainOn], many[legPlainOff])
	res.onVsOffOne = aggregate("on vs off", one[legPlainOn], one[legPlainOff])
	res.cpuMany = cpuDiff(many[legPlainOn], many[legPlainOff])
	res.cpuOne = cpuDiff(one[legPlainOn], one[legPlainOff])
	r.res.assemble = res
	return nil
}

// checkStreamPlain makes sure that the two proxies differ as they should:
// the simulator's streamed text ("tok tok …") arrives assembled through on,
// its plain answer through off.
func (r *runner) checkStreamPlain(on, off *Target, body []byte) error {
	for _, c := range []struct {
		t    *Target
		want string
	}{{on, `"content":"tok tok `}, {off, `"content":"Hello!`}} {
		got, err := r.c.read(r.ctx, chatURL(c.t), body)
		if err != nil {
			return fmt.Errorf("%s: %w", c.t.Name, err)
		}
		if !bytes.Contains(got, []byte(c.want)) {
			return fmt.Errorf("%s answered %.200s; want a reply with %s", c.t.Name, got, c.want)
		}
	}
	return nil
}

// cpuDiff is the median over the rounds of a's CPU per request less b's in
// the same round; 0 when unknown.
func cpuDiff(a, b []sample) time.Duration {
	var d []time.Duration
	for i := range min(len(a), len(b)) {
		x, y := a[i], b[i]
		if x.haveCPU && y.haveCPU && x.n > 0 && y.n > 0 {
			d = append(d, x.cpu/time.Duration(x.n)-y.cpu/time.Duration(y.n))
		}
	}
	return median(d)
}

// assembleTokens assembles events once, as the proxy does, and returns how
// many carried a token.
func assembleTokens(events [][]byte) (int, error) {
	a := assemble.New(assemble.Chat)
	n := 0
	for _, e := range events {
		tok, err := a.Add(e)
		if err != nil {
			return 0, fmt.Errorf("assembling the simulator's stream: %w", err)
		}
		if tok {
			n++
		}
	}
	if !a.Done() || n == 0 {
		return 0, errors.New("the simulator's stream does not assemble into a whole reply")
	}
	return n, nil
}

// assembleCost assembles events into a reply again and again for d, in
// this goroutine, and returns the time and the allocations per reply: what
// internal/assemble, as built into this program, costs one plain reply.
func assembleCost(events [][]byte, d time.Duration) (time.Duration, float64) {
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	start, n := time.Now(), 0
	for n == 0 || time.Since(start) < d {
		a := assemble.New(assemble.Chat)
		for _, e := range events {
			_, _ = a.Add(e)
		}
		_ = a.JSON()
		n++
	}
	el := time.Since(start)
	runtime.ReadMemStats(&m1)
	return el / time.Duration(n), float64(m1.Mallocs-m0.Mallocs) / float64(n)
}

// read posts body to url and returns the whole answer.
func (c *client) read(ctx context.Context, url string, body []byte) ([]byte, error) {
	resp, err := c.do(ctx, url, body)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

// sse posts a stream request to url and returns its data events up to
// [DONE], and the stream's length in bytes.
func (c *client) sse(ctx context.Context, url string, body []byte) (events [][]byte, n int, err error) {
	stream, err := c.read(ctx, url, body)
	if err != nil {
		return nil, 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(stream))
	for sc.Scan() {
		data, ok := bytes.CutPrefix(sc.Bytes(), []byte("data: "))
		if !ok {
			continue
		}
		if string(data) == "[DONE]" {
			return events, len(stream), nil
		}
		events = append(events, slices.Clone(data))
	}
	return nil, 0, fmt.Errorf("no data: [DONE] in %d bytes", len(stream))
}

// reportAssemble writes the assemble scenario's section.
func (r *runner) reportAssemble(p func(format string, args ...any)) {
	res := r.res.assemble
	if res == nil {
		return
	}
	o := r.o
	p("## stream_plain: a plain chat streamed upstream and assembled (%s a round)\n\n", o.Duration)
	p("With stream_plain on (the default) chutes-proxy asks the simulator for the plain chat as a stream, "+
		"%d events (%d with a token, then usage) in %d bytes, and assembles the reply; with stream_plain = false it forwards "+
		"the %d-byte plain answer. The same build, two instances.\n\n", res.events, res.tokens, res.streamBytes, res.plainBytes)
	p("| clients | target | req/s | p50 | p99 | added p50 | added p99 | throughput vs direct | CPU per reply | errors |\n|%s\n", strings.Repeat(" --- |", 10))
	for _, c := range []struct {
		n int
		m map[string]*Agg
	}{{o.Clients, res.many}, {1, res.one}} {
		for _, name := range []string{"direct", legPlainOn, legPlainOff} {
			a := c.m[name]
			add := added(a, a.AddP50, a.AddP99)
			p("| %d | %s | %.0f | %s | %s | %s | %s | %.2f | %s | %s |\n", c.n, a.Name, a.RPS, us(a.P50), us(a.P99), add[0], add[1], a.Ratio, cpuCell(a.CPUPerReq), errCell(a))
		}
	}
	p("\n| stream_plain on − off, same rounds | per reply | per token (%d a reply) |\n| --- | --- | --- |\n", res.tokens)
	perTok := func(d time.Duration) string { return signed(d / time.Duration(res.tokens)) }
	clients := func(n int) string {
		if n == 1 {
			return "1 client"
		}
		return fmt.Sprintf("%d clients", n)
	}
	for _, c := range []struct {
		n   int
		cpu time.Duration
	}{{o.Clients, res.cpuMany}, {1, res.cpuOne}} {
		if c.cpu == 0 {
			p("| CPU, %s | n/a in-process: run with --binary | |\n", clients(c.n))
			continue
		}
		p("| CPU, %s | %s | %s |\n", clients(c.n), signed(c.cpu), perTok(c.cpu))
	}
	for _, c := range []struct {
		n int
		a *Agg
	}{{1, res.onVsOffOne}, {o.Clients, res.onVsOffMany}} {
		p("| latency p50 (p99), %s | %s (%s) | %s |\n", clients(c.n), signed(c.a.AddP50), signed(c.a.AddP99), perTok(c.a.AddP50))
	}
	p("| throughput on / off, %s | %.2f | |\n", clients(o.Clients), res.onVsOffMany.Ratio)
	p("| the assembler alone: Add per event and JSON, one goroutine of chutes-bench (its own build of internal/assemble) | %.1f µs, %.0f allocations | %.0f ns |\n\n",
		float64(res.asmPerReply)/1e3, res.asmAllocs, float64(res.asmPerReply)/float64(res.tokens))
}
