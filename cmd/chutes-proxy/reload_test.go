package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
)

// TestReloadOnEditAlone runs serve in-process, as Windows runs it: no
// SIGHUP exists there, so saving the file must be enough. It edits a config
// whose path has spaces, waits for the reload, then ends ctx as Ctrl-C does
// and expects a clean drain (exit 0).
func TestReloadOnEditAlone(t *testing.T) {
	if runtime.GOOS == "windows" && len(reloadSignals()) != 0 {
		t.Fatalf("reloadSignals() = %v on Windows, which delivers none", reloadSignals())
	}
	dir := filepath.Join(t.TempDir(), "my configs")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "proxy.toml")
	base := `listen = "127.0.0.1:0"

[upstream]
base_url = "http://127.0.0.1:9/v1"
account_url = ""

[health]
probe_interval = "0s"
`
	writeReloadConfig(t, file, base)
	opts := config.Options{File: file, Getenv: func(string) string { return "" }}
	cfg, err := config.Load(opts)
	if err != nil {
		t.Fatal(err)
	}

	var logs lockedBuffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan string, 1)
	done := make(chan int, 1)
	go func() { done <- serve(ctx, cfg, opts, log, io.Discard, func(addr string) { ready <- addr }) }()
	select {
	case <-ready:
	case code := <-done:
		t.Fatalf("serve ended with %d before listening:\n%s", code, logs.String())
	}

	// Saved again with new content every 2 s until the reload shows: the
	// watcher's first read of the file races with the first save, as it
	// would with a person's (who is slower).
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; !logs.has("config reloaded", "file changed"); i++ {
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("no reload 15 s after the first edit:\n%s", logs.String())
		}
		writeReloadConfig(t, file, fmt.Sprintf("%s\n[[models]]\nid = \"org/model\"\naliases = [\"edited%d\"]\n", base, i))
		for wait := time.Now().Add(2 * time.Second); time.Now().Before(wait) && !logs.has("config reloaded", "file changed"); {
			select {
			case <-time.After(50 * time.Millisecond): // a condition, polled
			case code := <-done:
				t.Fatalf("serve ended with %d:\n%s", code, logs.String())
			}
		}
	}

	cancel() // what os.Interrupt (Ctrl-C) and SIGTERM do through main's context
	if code := <-done; code != 0 {
		t.Fatalf("serve exit code %d after the interrupt, want 0:\n%s", code, logs.String())
	}
	if !logs.has("chutes-proxy stopped", "") {
		t.Errorf("no clean stop:\n%s", logs.String())
	}
}

func writeReloadConfig(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// lockedBuffer collects JSON log lines from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// has reports whether a line with message msg (and, unless "", why) was
// logged.
func (l *lockedBuffer) has(msg, why string) bool {
	for _, line := range bytes.Split([]byte(l.String()), []byte("\n")) {
		var e struct{ Msg, Why string }
		if json.Unmarshal(line, &e) == nil && e.Msg == msg && (why == "" || e.Why == why) {
			return true
		}
	}
	return false
}
