package bench

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/pprof"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Idle keep-alive connections of the in-process proxy's transport
		// and of the load client wind down on their own after Close.
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
	)
}

// TestRunSmall runs every in-process scenario for a moment and checks that
// the report has each target's row, so that the tool cannot rot.
func TestRunSmall(t *testing.T) {
	var out, log bytes.Buffer
	o := Defaults()
	o.WithBare, o.WithTuned, o.WithRelay = true, true, true
	o.Rounds, o.Duration, o.Clients = 1, 100*time.Millisecond, 4
	o.StreamClients, o.StreamDuration, o.Events, o.Gap = 2, 100*time.Millisecond, 5, time.Millisecond
	o.FailoverCount, o.LargeCount = 10, 2
	o.Concurrent, o.ConcurrentEvents, o.ConcurrentGap = 50, 5, 20*time.Millisecond
	o.Out, o.Log = &out, &log
	if err := Run(context.Background(), o); err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	report := out.String()
	for _, want := range []string{
		"| chutes-proxy |", "| bare-go |", "| bare-go-tuned |", "| go-tcp-relay |", "plain chat, 4 clients: proxied / direct throughput",
		"streaming: added delay per SSE event", "first model's upstream refuses connections",
		"| 10 of 10 requests |", "first model's breaker open", "0 upstream calls",
		"heap per open stream", "| 50 ok, 0 errors |", "a 1 MB body copied at most once",
		"| 4 | " + legPlainOn + " |", "| 1 | " + legPlainOff + " |", "21 events (20 with a token, then usage)",
		"| CPU, 4 clients | n/a in-process", "| the assembler alone",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	for line := range strings.Lines(report) {
		// The bare ReverseProxy cuts a stream now and then ("read error
		// during body copy: use of closed network connection"); that is
		// its own affair. The direct path and chutes-proxy must not fail.
		if strings.Contains(line, "⚠") && !strings.HasPrefix(line, "| bare-go") {
			t.Errorf("errors on loopback with this little load: %s", line)
		}
	}
}

// TestMem reads this process's memory the way a binary's is read: /proc
// and a net/http/pprof heap profile.
func TestMem(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(pprof.Index))
	defer srv.Close()
	tg := &Target{PID: os.Getpid(), PprofAddr: strings.TrimPrefix(srv.URL, "http://")}
	m, err := tg.Mem(true)
	if err != nil {
		t.Fatal(err)
	}
	if !m.HaveHeap || m.HeapAlloc == 0 || m.StackInuse == 0 || m.TotalAlloc < m.HeapAlloc || m.RSS == 0 || m.HWM < m.RSS {
		t.Errorf("implausible reading %+v", m)
	}
	if cpu, ok := procCPU([]int{os.Getpid()}); !ok || cpu <= 0 {
		t.Errorf("procCPU = %v, %v", cpu, ok)
	}
}

func TestChatBodySize(t *testing.T) {
	for _, size := range []int{512, bodySize, 100 << 10, largeSize} {
		b := chatBody(ModelOK, true, size)
		if len(b) < size*9/10 || len(b) > size*11/10 {
			t.Errorf("chatBody(%d) is %d bytes", size, len(b))
		}
	}
}

func TestPercentiles(t *testing.T) {
	d := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	tests := []struct {
		name      string
		got, want time.Duration
	}{
		{"p50", pct(d, 50), 5},
		{"p99", pct(d, 99), 10},
		{"p50 of nothing", pct(nil, 50), 0},
		{"median odd", median([]time.Duration{3, 1, 2}), 2},
		{"median even", median([]time.Duration{4, 1, 2, 3}), 2},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %d, want %d", tt.name, tt.got, tt.want)
		}
	}
}
