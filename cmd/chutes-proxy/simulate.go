package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/simulator"
)

// defaultSimulateListen is next to the proxy's 8787, so that both can run
// side by side with the proxy pointed at the simulator.
const defaultSimulateListen = "127.0.0.1:8788"

// simulatorStopTimeout bounds how long a stopping simulator waits for
// requests in flight; Close has already cut the hanging and pacing ones.
const simulatorStopTimeout = 5 * time.Second

func runSimulate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("simulate", "Run the simulated Chutes API alone, so that the proxy (or any OpenAI client) can be pointed at a bad day on purpose.\nThe scenario format is documented in docs/SIMULATOR.md.", stdout, stderr)
	listen := fs.String("listen", defaultSimulateListen, "address to listen on")
	file := fs.String("scenario", "", "scenario TOML file (default: the demo's scenario: one model down, one flaky, two healthy)")
	if code, done := parse(fs, args); done {
		return code
	}

	sc, name := simulator.DefaultScenario(), "built-in (the demo's)"
	if *file != "" {
		var err error
		if sc, err = simulator.LoadScenario(*file); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		name = *file
	}
	sim := simulator.New(sc)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(stderr, "chutes-proxy simulate: cannot listen on %s: %v\n", *listen, err)
		fmt.Fprintln(stderr, "Another program holds the port: stop it or pick another with --listen, e.g. --listen 127.0.0.1:0 for any free port.")
		return 1
	}
	base := "http://" + ln.Addr().String() + "/v1"
	key := simulatorKey(sc)

	fmt.Fprintf(stdout, "Simulated Chutes API on %s (scenario: %s)\n", base, name)
	fmt.Fprintf(stdout, "Keys: %s\n\n", describeKeys(sc))
	printModels(stdout, sc)
	fmt.Fprintln(stdout, "\nPoint the proxy at it (in another terminal):")
	fmt.Fprintf(stdout, "  CHUTES_PROXY_UPSTREAM=%s CHUTES_API_KEY=%s chutes-proxy\n", base, key)
	fmt.Fprintln(stdout, "or any OpenAI client:")
	fmt.Fprintf(stdout, "  OPENAI_BASE_URL=%s OPENAI_API_KEY=%s\n", base, key)
	fmt.Fprintln(stdout, "\nCtrl-C stops it.")

	if err := serveSimulator(ctx, sim, ln); err != nil {
		fmt.Fprintln(stderr, "chutes-proxy simulate:", err)
		return 1
	}
	return 0
}

// serveSimulator serves sim on ln until ctx ends. It closes sim first, so
// that hanging and slow requests end at once instead of holding up the
// shutdown.
func serveSimulator(ctx context.Context, sim *simulator.Simulator, ln net.Listener) error {
	srv := &http.Server{Handler: sim, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		sim.Close()
		return err
	case <-ctx.Done():
	}
	sim.Close()
	sctx, cancel := context.WithTimeout(context.Background(), simulatorStopTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	<-errc
	if errors.Is(err, context.DeadlineExceeded) {
		_ = srv.Close()
		return nil // the simulator's requests are expendable
	}
	return err
}

// simulatorKey is a key the scenario accepts, to show in examples.
func simulatorKey(sc simulator.Scenario) string {
	if len(sc.Keys) > 0 && !sc.AcceptAnyKey {
		return sc.Keys[0]
	}
	return "cpk_test"
}

func describeKeys(sc simulator.Scenario) string {
	switch {
	case sc.AcceptAnyKey:
		return "none needed (accept_any_key)"
	case len(sc.Keys) > 0:
		return strings.Join(sc.Keys, ", ")
	}
	return "any key starting with cpk_ (e.g. cpk_test)"
}

// printModels prints one line per scripted model and one for the rest.
func printModels(w io.Writer, sc simulator.Scenario) {
	width := len("any other model")
	for _, m := range sc.Models {
		width = max(width, len(m.ID))
	}
	fmt.Fprintln(w, "Models:")
	for _, m := range sc.Models {
		fmt.Fprintf(w, "  %-*s  %s\n", width, m.ID, describeBehavior(m.Behavior))
	}
	other := "404 model not found"
	if sc.DefaultBehavior != nil {
		other = describeBehavior(*sc.DefaultBehavior)
	}
	fmt.Fprintf(w, "  %-*s  %s\n", width, "any other model", other)
}

// describeBehavior says in a few words what a model answers.
func describeBehavior(b simulator.Behavior) string {
	pacing := func() string {
		var p []string
		if b.TTFT > 0 {
			p = append(p, "first token after "+b.TTFT.String())
		}
		if b.TokensPerSecond > 0 {
			p = append(p, strconv.FormatFloat(b.TokensPerSecond, 'f', -1, 64)+" tokens/s")
		}
		if b.Reasoning != "" {
			p = append(p, "reasons first (reasoning_content)")
		}
		if len(p) == 0 {
			return ""
		}
		return " (" + strings.Join(p, ", ") + ")"
	}
	switch b.Kind {
	case "", simulator.KindHealthy:
		return "healthy" + pacing()
	case simulator.KindDown:
		return "down: 503 No instances available"
	case simulator.KindOverloaded:
		if b.RetryAfter > 0 {
			return fmt.Sprintf("overloaded: 429 at maximum capacity, Retry-After %d s", b.RetryAfter)
		}
		return "overloaded: 429 at maximum capacity"
	case simulator.KindPaymentRequired:
		return "payment_required: 402 quota exceeded, balance $0"
	case simulator.KindNotFound:
		return "not_found: 404 model not found (not listed)"
	case simulator.KindHeadersThenHang:
		return "headers_then_hang: 200 headers, then silence"
	case simulator.KindHang:
		return "hang: no answer at all"
	case simulator.KindDropAfter:
		return fmt.Sprintf("drop_after: stream cut after %d events%s", b.DropAfter, pacing())
	case simulator.KindEndAfter:
		return fmt.Sprintf("end_after: stream ended without [DONE] after %d events%s", b.EndAfter, pacing())
	case simulator.KindStallAfter:
		return fmt.Sprintf("stall_after: silent after %d events%s", b.StallAfter, pacing())
	case simulator.KindGarbage:
		return "garbage: 200 with an HTML page"
	case simulator.KindErrorFirstEvent:
		return "error_first_event: 200 stream that opens with an error"
	case simulator.KindFlaky:
		fail := "503"
		if b.FailureKind != "" && b.FailureKind != simulator.KindDown {
			f := b
			f.Kind, f.FailureKind = b.FailureKind, ""
			fail = describeBehavior(f)
		}
		return fmt.Sprintf("flaky: %s for %s%% of requests, else healthy%s",
			fail, strconv.FormatFloat(b.FailureRate*100, 'f', -1, 64), pacing())
	}
	return b.Kind
}
