package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/simulator"
)

// defaultDemoListen is the proxy's usual address, so that an app already
// pointed at the proxy talks to the demo.
const defaultDemoListen = "127.0.0.1:8787"

// demoKey is the Chutes key the demo's proxy sends to the simulator, which
// takes any key starting with cpk_. Clients need none.
const demoKey = "cpk_demo_not_a_real_key"

// demoChain is the "auto" alias's chain: down, flaky, healthy.
var demoChain = []string{
	"deepseek-ai/DeepSeek-R1",
	"Qwen/Qwen2.5-72B-Instruct",
	"chutesai/Mistral-Small-3.1-24B-Instruct-2503",
}

// outageModel is the local provider's model in `demo --outage`, and
// outageChain the chain that ends with it.
const outageModel = "llama3.1:8b"

var outageChain = append(append([]string(nil), demoChain[:2]...), "local:"+outageModel)

// outageProvider is the [[providers]] table of `demo --outage`: a second
// simulator, as a local Ollama or llama.cpp server would be.
const outageProvider = `
[[providers]]                   # demo --outage: a second simulator plays a local model server
name = "local"
base_url = %q
`

// outageScenario is that second simulator's: one healthy local model.
func outageScenario() simulator.Scenario {
	return simulator.Scenario{AcceptAnyKey: true, Models: []simulator.ModelScenario{{ID: outageModel, Behavior: simulator.Behavior{
		TTFT: 150 * time.Millisecond, TokensPerSecond: 40,
		Reply: "Hello from a local model. Chutes is down, and the chat goes on through another provider."}}}}
}

// resumeChain is the chain of `demo --resume`: a model that cuts half of its
// streams mid-reply, then a healthy one (simulator.ResumeScenario).
var resumeChain = []string{
	"Qwen/Qwen2.5-72B-Instruct",
	"chutesai/Mistral-Small-3.1-24B-Instruct-2503",
}

// demoConfigTOML is the demo proxy's config; %q are the listen address and
// the simulator's base URL. It is written to a file rather than built in
// memory so that a reload (SIGHUP, or the user editing it to play) reads
// the demo's config again instead of the defaults, which point at the real
// Chutes.
const demoConfigTOML = `# chutes-proxy demo: the proxy in front of the built-in simulated Chutes.
# Edit and save: the running demo reloads it (try reordering the fallbacks).
listen = %q

[upstream]
base_url = %q
api_key = %q
first_byte_timeout = "5s"
account_url = ""                # offline: no account API

[breaker]
failures = 3
cooldown = "30s"

[failover]
resume_streams = %t             # true in demo --resume: cut streams are continued
%s
[[models]]
id = %q
aliases = ["auto", "r1"]
fallbacks = %s

[[models]]
id = "deepseek-ai/DeepSeek-V3"  # healthy, streams reasoning_content before content
aliases = ["v3"]
`

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("demo", "Run a simulated Chutes (offline, no key needed) and the proxy in front of it, with a chain\nwhose first model is down and second flaky, and print curl lines that show failover. Ctrl-C stops both.", stdout, stderr)
	listen := fs.String("listen", defaultDemoListen, "address the proxy listens on")
	resume := fs.Bool("resume", false, "a chain whose first model cuts half of its streams mid-reply, with resume_streams on: every streamed reply still arrives whole")
	outage := fs.Bool("outage", false, "Chutes down entirely (nothing listens), and a second simulator as another provider that the chain moves to")
	if code, done := parse(fs, args); done {
		return code
	}
	sc, chain := simulator.DefaultScenario(), demoChain
	switch {
	case *resume && *outage:
		fmt.Fprintln(stderr, "chutes-proxy demo: choose one of --resume and --outage")
		return 2
	case *resume:
		sc, chain = simulator.ResumeScenario(), resumeChain
	case *outage:
		chain = outageChain
	}

	// Say plainly when the port is taken, before starting anything. serve
	// listens again right after; losing that race is reported by serve.
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(stderr, "chutes-proxy demo: cannot listen on %s: %v\n", *listen, err)
		fmt.Fprintln(stderr, "Is chutes-proxy (or its demo) already running? Stop it, or run the demo on another port:")
		fmt.Fprintln(stderr, "  chutes-proxy demo --listen 127.0.0.1:8790")
		return 1
	}
	ln.Close()

	// The simulators stop after the proxy has drained, since the proxy's
	// requests in flight need them.
	simCtx, stopSims := context.WithCancel(context.WithoutCancel(ctx))
	var sims sync.WaitGroup
	defer func() {
		stopSims()
		sims.Wait()
	}()
	startSim := func(sc simulator.Scenario) (string, error) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", fmt.Errorf("cannot start a simulator: %w", err)
		}
		sims.Go(func() { _ = serveSimulator(simCtx, simulator.New(sc), ln) })
		return "http://" + ln.Addr().String() + "/v1", nil
	}
	simBase, err := startSim(sc)
	if err != nil {
		fmt.Fprintln(stderr, "chutes-proxy demo:", err)
		return 1
	}
	providers := ""
	if *outage {
		// Chutes is down entirely: nothing listens where it was.
		simBase = "http://" + closedAddr() + "/v1"
		localBase, err := startSim(outageScenario())
		if err != nil {
			fmt.Fprintln(stderr, "chutes-proxy demo:", err)
			return 1
		}
		providers = fmt.Sprintf(outageProvider, localBase)
	}

	dir, err := os.MkdirTemp("", "chutes-proxy-demo-")
	if err != nil {
		fmt.Fprintln(stderr, "chutes-proxy demo:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "proxy.toml")
	text := fmt.Sprintf(demoConfigTOML, *listen, simBase, demoKey, *resume, providers, chain[0], tomlList(chain[1:]))
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		fmt.Fprintln(stderr, "chutes-proxy demo:", err)
		return 1
	}
	// No environment: a real CHUTES_API_KEY or CHUTES_PROXY_UPSTREAM must
	// not send the demo's traffic to the real Chutes.
	opts := config.Options{File: file, Listen: *listen, Getenv: func(string) string { return "" }}
	cfg, err := config.Load(opts)
	if err != nil {
		fmt.Fprintln(stderr, "chutes-proxy demo: the demo's config is invalid (a bug, please report it):")
		printConfigError(stderr, err)
		return 1
	}

	lw := newBatchWriter(stderr)
	defer lw.Flush()
	log := newLogger(lw)
	ready := func(addr string) {
		if *outage {
			printOutageBanner(stdout, addr, simBase, file)
			return
		}
		printDemoBanner(stdout, sc, chain, *resume, addr, simBase, file, cfg)
	}
	return serve(ctx, cfg, opts, log, stdout, ready)
}

// printDemoBanner says what runs where and how to see a failover.
func printDemoBanner(w io.Writer, sc simulator.Scenario, chain []string, resume bool, addr, simBase, file string, cfg *config.Config) {
	printDemoHead(w, "chutes-proxy demo: a simulated Chutes (offline, no key needed) with the proxy in front of it.",
		addr, "simulator    "+simBase, file)
	behaviors := map[string]simulator.Behavior{}
	width := 0
	for _, m := range sc.Models {
		behaviors[m.ID] = m.Behavior
	}
	for _, id := range chain {
		width = max(width, len(id))
	}
	for i, id := range chain {
		fmt.Fprintf(w, "  %d. %-*s  %s\n", i+1, width, id, describeBehavior(behaviors[id]))
	}
	fmt.Fprintln(w)
	if resume {
		fmt.Fprintln(w, "resume_streams is on: a stream cut mid-reply is asked again with the text so far and")
		fmt.Fprintln(w, "continued in place, after an SSE comment \": resumed on MODEL\". Try the streamed line a few")
		fmt.Fprintln(w, "times: every reply arrives whole, and the proxy's log says \"stream resumed\".")
		fmt.Fprintf(w, "\n  %s\n\n", demoCurl(addr, true))
		fmt.Fprintln(w, "Ctrl-C stops the demo.")
		fmt.Fprintln(w)
		return
	}
	fmt.Fprintln(w, "Try it in another terminal. The response headers X-Chutes-Proxy-Model and")
	fmt.Fprintln(w, "X-Chutes-Proxy-Attempts name the model that served and the upstream attempts it took:")
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  %s\n\n", demoCurl(addr, false))
	fmt.Fprintf(w, "  %s\n\n", demoCurl(addr, true))
	fmt.Fprintf(w, "After %d failures in a row DeepSeek-R1's circuit breaker opens: for %s requests skip it\n",
		cfg.LimitsFor(demoChain[0]).Failures, cfg.LimitsFor(demoChain[0]).Cooldown)
	fmt.Fprintln(w, "without trying it (Attempts drops to 1, the status page shows it open).")
	fmt.Fprintln(w, "Ctrl-C stops the demo.")
	fmt.Fprintln(w)
}

// closedAddr is a loopback address where nothing listens: connections to it
// are refused at once, as when Chutes' gateway is down.
func closedAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:9"
	}
	defer ln.Close()
	return ln.Addr().String()
}

// printDemoHead says what runs where, for every demo.
func printDemoHead(w io.Writer, title, addr, upstream, file string) {
	fmt.Fprintln(w, title)
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  proxy        http://%s/v1   (OPENAI_BASE_URL for any OpenAI client; any API key)\n", addr)
	fmt.Fprintf(w, "  status page  http://%s/\n", addr)
	fmt.Fprintf(w, "  %s\n", upstream)
	fmt.Fprintf(w, "  config       %s   (edit and save: the proxy reloads it)\n", file)
	fmt.Fprintln(w)
	fmt.Fprintln(w, `The model "auto" is this chain, tried in order:`)
}

// printOutageBanner says what `demo --outage` shows.
func printOutageBanner(w io.Writer, addr, chutesBase, file string) {
	printDemoHead(w, "chutes-proxy demo --outage: Chutes is down entirely, and another provider keeps the chat going.",
		addr, "Chutes       "+chutesBase+"   (nothing listens: every connection is refused)", file)
	for i, id := range outageChain {
		what := "Chutes: unreachable"
		if strings.HasPrefix(id, "local:") {
			what = `the provider "local" (a second simulator, as a local Ollama would be): healthy`
		}
		fmt.Fprintf(w, "  %d. %-28s %s\n", i+1, id, what)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Try it in another terminal: X-Chutes-Proxy-Model says local:"+outageModel+", within a few")
	fmt.Fprintln(w, "milliseconds of the refused connections (after three, Chutes' models are skipped at once):")
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  %s\n\n", demoCurl(addr, false))
	fmt.Fprintf(w, "  %s\n\n", demoCurl(addr, true))
	fmt.Fprintln(w, "Ctrl-C stops the demo.")
	fmt.Fprintln(w)
}

// tomlList renders ids as a TOML array of strings.
func tomlList(ids []string) string {
	q := make([]string, len(ids))
	for i, id := range ids {
		q[i] = strconv.Quote(id)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// demoCurl is a curl command line that asks the demo's "auto" chain a
// question and prints the response headers; stream adds -N and
// "stream":true.
func demoCurl(addr string, stream bool) string {
	var b strings.Builder
	b.WriteString("curl -sS ")
	if stream {
		b.WriteString("-N ")
	}
	b.WriteString("-D - http://" + addr + "/v1/chat/completions -H 'Content-Type: application/json' -d '")
	b.WriteString(`{"model":"auto",`)
	if stream {
		b.WriteString(`"stream":true,`)
	}
	b.WriteString(`"messages":[{"role":"user","content":"Hello!"}]}'`)
	return b.String()
}
