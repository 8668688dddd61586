package quota

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/diagnose"
	"github.com/chutes-proxy/chutes-proxy/internal/failover"
	"github.com/chutes-proxy/chutes-proxy/internal/proxy"
	"github.com/chutes-proxy/chutes-proxy/internal/simulator"
)

// helperEnv makes the test binary a counting helper process for
// TestConcurrentProcessesLoseNoCount: it adds QUOTA_HELPER_N to the file
// QUOTA_HELPER_FILE, flushing as it goes, and exits.
const helperEnv = "QUOTA_HELPER_FILE"

func TestMain(m *testing.M) {
	if file := os.Getenv(helperEnv); file != "" {
		n, _ := strconv.Atoi(os.Getenv("QUOTA_HELPER_N"))
		c := Open(Options{File: file})
		for i := range n {
			c.Add(1)
			if i%7 == 0 {
				if err := c.Flush(); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(1)
				}
			}
		}
		if err := c.Close(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func readState(t *testing.T, file string) state {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("state file is not JSON: %v\n%s", err, b)
	}
	return st
}

func TestSurvivesRestart(t *testing.T) {
	file := filepath.Join(t.TempDir(), "sub", "quota.json")
	clk := &clock{t: time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)}
	c := Open(Options{File: file, Limit: 300, Now: clk.now})
	for range 12 {
		c.Add(1)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if st := readState(t, file); st.Day != "2026-03-04" || st.Count != 12 {
		t.Fatalf("file = %+v, want 12 on 2026-03-04", st)
	}

	c2 := Open(Options{File: file, Limit: 300, Now: clk.now})
	if got := c2.Today(); got != 12 {
		t.Fatalf("after restart Today() = %d, want 12", got)
	}
	c2.Add(3)
	if err := c2.Close(); err != nil {
		t.Fatal(err)
	}
	if st := readState(t, file); st.Count != 15 {
		t.Fatalf("file count = %d, want 15", st.Count)
	}

	// The next UTC day starts from zero, and the old day's file does not
	// count against it.
	clk.set(time.Date(2026, 3, 5, 0, 0, 1, 0, time.UTC))
	c3 := Open(Options{File: file, Limit: 300, Now: clk.now})
	if got := c3.Today(); got != 0 {
		t.Fatalf("next day Today() = %d, want 0", got)
	}
	c3.Add(1)
	_ = c3.Close()
	if st := readState(t, file); st.Day != "2026-03-05" || st.Count != 1 {
		t.Fatalf("file = %+v, want 1 on 2026-03-05", st)
	}
	// Windows has no mode bits (Go reports 0777 for every directory); the
	// profile's ACLs keep it private there.
	if fi, err := os.Stat(filepath.Dir(file)); err != nil || runtime.GOOS != "windows" && fi.Mode().Perm() != 0o700 {
		t.Fatalf("state dir mode: %v %v", fi.Mode(), err)
	}
}

func TestConcurrentWritersLoseNoCount(t *testing.T) {
	file := filepath.Join(t.TempDir(), "quota.json")
	const writers, each = 8, 400
	var wg sync.WaitGroup
	counters := make([]*Counter, writers)
	for i := range counters {
		// Each Counter is a separate "proxy": its own open file
		// description, so flock excludes them as it would processes.
		counters[i] = Open(Options{File: file})
	}
	for _, c := range counters {
		wg.Go(func() {
			for j := range each {
				c.Add(1)
				if j%13 == 0 {
					if err := c.Flush(); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
	wg.Wait()
	for _, c := range counters {
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if st := readState(t, file); st.Count != writers*each {
		t.Fatalf("file count = %d, want %d", st.Count, writers*each)
	}
	if got := Open(Options{File: file}).Today(); got != writers*each {
		t.Fatalf("Today() = %d, want %d", got, writers*each)
	}
}

func TestConcurrentProcessesLoseNoCount(t *testing.T) {
	file := filepath.Join(t.TempDir(), "quota.json")
	const procs, each = 4, 150
	var wg sync.WaitGroup
	for range procs {
		wg.Go(func() {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), helperEnv+"="+file, "QUOTA_HELPER_N="+strconv.Itoa(each))
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("helper: %v\n%s", err, out)
			}
		})
	}
	wg.Wait()
	if st := readState(t, file); st.Count != procs*each {
		t.Fatalf("file count = %d, want %d", st.Count, procs*each)
	}
}

func TestCorruptFileIsReportedNotFatal(t *testing.T) {
	tests := []struct {
		name    string
		content string
	}{
		{"not json", "{not json"},
		{"truncated", `{"day":"2026-03-04","cou`},
		{"negative", `{"day":"2026-03-04","count":-5}`},
		{"bad day", `{"day":"yesterday","count":5}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "quota.json")
			if err := os.WriteFile(file, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			var logs strings.Builder
			var mu sync.Mutex
			log := newTestLogger(&mu, &logs)
			clk := &clock{t: time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)}
			c := Open(Options{File: file, Limit: 10, Now: clk.now, Logger: log})
			snap := c.Snapshot()
			if snap.Problem == "" || !strings.Contains(snap.Problem, "corrupt") || snap.Count != 0 {
				t.Fatalf("snapshot = %+v, want a corrupt-file problem and count 0", snap)
			}
			mu.Lock()
			logged := logs.String()
			mu.Unlock()
			if !strings.Contains(logged, "quota state file problem") {
				t.Fatalf("not logged: %s", logged)
			}
			if b, err := os.ReadFile(file + ".corrupt"); err != nil || string(b) != tt.content {
				t.Fatalf("corrupt file not kept aside: %q %v", b, err)
			}
			c.Add(2)
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			if st := readState(t, file); st.Count != 2 {
				t.Fatalf("count after corrupt = %d, want 2", st.Count)
			}
		})
	}
}

func TestUnwritableFileKeepsCounts(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "blocker")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(blocker, "quota.json") // under a regular file: cannot exist
	c := Open(Options{File: file})
	c.Add(5)
	if err := c.Flush(); err == nil {
		t.Fatal("Flush succeeded under a regular file")
	}
	if c.Today() != 5 || c.Snapshot().Problem == "" {
		t.Fatalf("today=%d problem=%q", c.Today(), c.Snapshot().Problem)
	}
	good := filepath.Join(dir, "quota.json")
	c.SetFile(good)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if st := readState(t, good); st.Count != 5 {
		t.Fatalf("moved count = %d, want 5", st.Count)
	}
}

func TestSnapshotWarnsAt80Percent(t *testing.T) {
	clk := &clock{t: time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)}
	tests := []struct {
		name      string
		limit     int
		count     int
		warn      string
		exhausted bool
	}{
		{"no cap", 0, 500, "", false},
		{"under", 10, 7, "", false},
		{"80%", 10, 8, "80% of the proxy's daily quota used (8 of 10)", false},
		{"used up", 10, 10, "used up", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Open(Options{Limit: tt.limit, Now: clk.now})
			c.Add(tt.count)
			s := c.Snapshot()
			if !strings.Contains(s.Warning, tt.warn) || (tt.warn == "") != (s.Warning == "") || s.Exhausted != tt.exhausted {
				t.Fatalf("snapshot = %+v", s)
			}
			if !s.Reset.Equal(time.Date(2026, 3, 5, 0, 0, 0, 0, time.UTC)) {
				t.Fatalf("reset = %v", s.Reset)
			}
		})
	}
}

func TestGate(t *testing.T) {
	clk := &clock{t: time.Date(2026, 3, 4, 18, 30, 0, 0, time.UTC)}
	c := Open(Options{Limit: 3, Now: clk.now})
	for i := range 3 {
		if err := c.Gate(context.Background()); err != nil {
			t.Fatalf("request %d refused: %v", i, err)
		}
		c.Add(1)
	}
	err := c.Gate(context.Background())
	var de *diagnose.Error
	if !errors.As(err, &de) {
		t.Fatalf("Gate = %v, want *diagnose.Error", err)
	}
	if de.Status != 429 || de.Code != diagnose.CodeQuotaExhausted || de.RetryAfter != 5*time.Hour+30*time.Minute {
		t.Fatalf("error = %d %s retry %v", de.Status, de.Code, de.RetryAfter)
	}
	for _, want := range []string{"3 of 3", "daily_requests", "00:00 UTC", "5h30m", "not Chutes"} {
		if !strings.Contains(de.Message, want) {
			t.Errorf("message lacks %q: %s", want, de.Message)
		}
	}
	c.SetLimit(0)
	if err := c.Gate(context.Background()); err != nil {
		t.Fatalf("no cap still refuses: %v", err)
	}
	// Midnight frees it.
	c.SetLimit(3)
	clk.set(time.Date(2026, 3, 5, 0, 0, 0, 0, time.UTC))
	if err := c.Gate(context.Background()); err != nil {
		t.Fatalf("after midnight: %v", err)
	}
}

// countAttempts is the part of health.Monitor the gate needs: it counts
// upstream attempts.
type countAttempts struct{ c *Counter }

func (o countAttempts) Attempted(_ string, a failover.Attempt, _ time.Duration) {
	if a.Upstream() {
		o.c.Add(1)
	}
}

// TestProxyAnswers429AtLimit runs the proxy over loopback with the counter
// as its Gate: requests pass until the count reaches the limit, then get a
// 429 daily_quota_exhausted with Retry-After, and the upstream sees none.
func TestProxyAnswers429AtLimit(t *testing.T) {
	const model = "test/model"
	sim := simulator.New(simulator.Scenario{Models: []simulator.ModelScenario{{ID: model}}})
	up := httptest.NewServer(sim)
	defer up.Close()
	defer sim.Close()

	cfg, err := config.Load(config.Options{Getenv: func(string) string { return "" }, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Upstream.BaseURL = up.URL + "/v1"
	cfg.Upstream.APIKey = "cpk_quota_test_key_0123456789"
	cfg.Models = nil
	cfg.Quota.DailyRequests = 2

	file := filepath.Join(t.TempDir(), "quota.json")
	c := Open(Options{File: file, Limit: cfg.Quota.DailyRequests})
	srv := proxy.New(proxy.Options{Config: cfg, Router: failover.New(cfg, nil, countAttempts{c}), Gate: c.Gate})
	defer srv.Close()
	ts := httptest.NewServer(srv)
	defer ts.Close()
	client := ts.Client()
	defer client.CloseIdleConnections()

	post := func() *http.Response {
		resp, err := client.Post(ts.URL+"/v1/chat/completions", "application/json",
			strings.NewReader(`{"model":"`+model+`","messages":[{"role":"user","content":"hi"}]}`))
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	for i := range 2 {
		resp := post()
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
	}
	resp := post()
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var e struct {
		Error struct{ Code, Message string }
	}
	_ = json.Unmarshal(body, &e)
	ra, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	wantRA := int(time.Until(diagnose.NextUTCMidnight(time.Now())).Seconds())
	if resp.StatusCode != 429 || e.Error.Code != "daily_quota_exhausted" || ra < wantRA-5 || ra > wantRA+5 {
		t.Fatalf("third request: %d %s Retry-After %q (want ~%d): %s", resp.StatusCode, e.Error.Code, resp.Header.Get("Retry-After"), wantRA, body)
	}
	if n := sim.Requests(model); n != 2 {
		t.Fatalf("upstream saw %d requests, want 2", n)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if st := readState(t, file); st.Count != 2 {
		t.Fatalf("file count = %d, want 2", st.Count)
	}
}

func TestRunFlushesUntilCanceled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "quota.json")
		c := Open(Options{File: file, FlushEvery: 10 * time.Millisecond})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { c.Run(ctx); close(done) }()
		defer func() { cancel(); <-done }() // Run ends in the bubble, even on failure
		c.Add(4)
		time.Sleep(10 * time.Millisecond) // the bubble's clock: one tick, no real time
		synctest.Wait()                   // Run has flushed and waits for the next tick
		if st := readState(t, file); st.Count != 4 {
			t.Fatalf("count after one tick = %d, want 4", st.Count)
		}
		c.Add(1)
		cancel()
		<-done
		if st := readState(t, file); st.Count != 5 {
			t.Fatalf("count after Run ended = %d, want 5", st.Count)
		}
	})
}

func TestDefaultFile(t *testing.T) {
	// Env values name directories by placeholder: {a}, {b} and {c} are
	// fresh directories, {blocker} a regular file no directory can be made
	// under (what a read-only or missing home amounts to, even for root).
	type defaultFileCase struct {
		name    string
		env     map[string]string
		want    string   // the state file's directory, placeholders allowed; "" means an error
		wantErr []string // what the error says
	}
	var tests []defaultFileCase
	if runtime.GOOS == "windows" {
		tests = []defaultFileCase{
			{name: "%LOCALAPPDATA%", env: map[string]string{"LOCALAPPDATA": "{a}", "USERPROFILE": "{b}", "TMP": "{c}", "TEMP": "{c}"},
				want: "{a}/chutes-proxy"},
			{name: "$XDG_STATE_HOME comes first", env: map[string]string{"XDG_STATE_HOME": "{b}", "LOCALAPPDATA": "{a}", "TMP": "{c}", "TEMP": "{c}"},
				want: "{b}/chutes-proxy"},
			{name: "unusable %LOCALAPPDATA%: the profile", env: map[string]string{"LOCALAPPDATA": "{blocker}/x", "USERPROFILE": "{b}", "TMP": "{c}", "TEMP": "{c}"},
				want: "{b}/.local/state/chutes-proxy"},
			{name: "nothing but the temp dir", env: map[string]string{"LOCALAPPDATA": "{blocker}/x", "USERPROFILE": "{blocker}/y", "TMP": "{c}", "TEMP": "{c}"},
				want: "{c}/chutes-proxy"},
		}
	} else {
		tests = []defaultFileCase{
			{name: "$XDG_STATE_HOME", env: map[string]string{"XDG_STATE_HOME": "{a}", "HOME": "{b}"}, want: "{a}/chutes-proxy"},
			{name: "~/.local/state", env: map[string]string{"HOME": "{b}"}, want: "{b}/.local/state/chutes-proxy"},
			{name: "a relative $XDG_STATE_HOME is ignored", env: map[string]string{"XDG_STATE_HOME": "state", "HOME": "{b}"},
				want: "{b}/.local/state/chutes-proxy"},
			{name: "unusable home: the cache dir", env: map[string]string{"HOME": "{blocker}/home", "XDG_CACHE_HOME": "{a}", "TMPDIR": "{c}"},
				want: "{a}/chutes-proxy"},
			{name: "no home at all: the temp dir", env: map[string]string{"TMPDIR": "{c}"}, want: "{c}/chutes-proxy"},
			{name: "a relative home: the temp dir", env: map[string]string{"HOME": "home", "TMPDIR": "{c}"}, want: "{c}/chutes-proxy"},
			{name: "nothing writable", env: map[string]string{"HOME": "{blocker}/h", "XDG_CACHE_HOME": "{blocker}/c", "TMPDIR": "{blocker}/t"},
				wantErr: []string{"state_file", "{blocker}/h/.local/state/chutes-proxy", "{blocker}/c/chutes-proxy", "{blocker}/t/chutes-proxy"}},
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			blocker := filepath.Join(t.TempDir(), "blocker")
			if err := os.WriteFile(blocker, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			r := strings.NewReplacer("{a}", t.TempDir(), "{b}", t.TempDir(), "{c}", t.TempDir(), "{blocker}", blocker)
			fill := func(s string) string { return filepath.FromSlash(r.Replace(s)) }
			for _, k := range []string{"XDG_STATE_HOME", "XDG_CACHE_HOME", "HOME", "TMPDIR", "LOCALAPPDATA", "USERPROFILE", "TMP", "TEMP"} {
				t.Setenv(k, fill(tt.env[k]))
			}
			got, err := DefaultFile()
			if tt.want == "" {
				if err == nil {
					t.Fatalf("DefaultFile() = %q, want an error", got)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), fill(w)) {
						t.Errorf("error %q does not say %q", err, fill(w))
					}
				}
				return
			}
			if want := filepath.Join(fill(tt.want), "quota.json"); err != nil || got != want {
				t.Fatalf("DefaultFile() = %q, %v; want %q", got, err, want)
			}
			if fi, err := os.Stat(filepath.Dir(got)); err != nil || !fi.IsDir() {
				t.Errorf("the directory was not created: %v", err)
			}
			if left, _ := os.ReadDir(filepath.Dir(got)); len(left) != 0 {
				t.Errorf("the writability probe left %v behind", left)
			}
		})
	}
}

func newTestLogger(mu *sync.Mutex, w *strings.Builder) *slog.Logger {
	return slog.New(slog.NewTextHandler(lockedWriter{mu, w}, nil))
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *strings.Builder
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
