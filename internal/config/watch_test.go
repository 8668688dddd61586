package config

import (
	"context"
	"os"
	"testing"
	"testing/synctest"
	"time"
)

func TestWatch(t *testing.T) {
	const (
		initial = "listen = \"127.0.0.1:1001\"\n"
		edited  = "listen = \"127.0.0.1:1002\"\n" // same size as initial
		every   = time.Second
	)
	mustWrite := func(t *testing.T, p, s string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		run  func(t *testing.T, path string, w *watched)
	}{
		{"write in place", func(t *testing.T, p string, w *watched) {
			mustWrite(t, p, edited)
			w.changed()
		}},
		{"rename over", func(t *testing.T, p string, w *watched) {
			mustWrite(t, p+".tmp", edited)
			if err := os.Rename(p+".tmp", p); err != nil {
				t.Fatal(err)
			}
			w.changed()
		}},
		{"delete, then recreate", func(t *testing.T, p string, w *watched) {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			w.quiet(2 * every) // missing for a while: not a change
			mustWrite(t, p, edited)
			w.changed()
		}},
		{"two saves", func(t *testing.T, p string, w *watched) {
			mustWrite(t, p, edited)
			w.changed()
			mustWrite(t, p, initial)
			w.changed()
		}},
		{"same size and mtime", func(t *testing.T, p string, w *watched) {
			// File systems keep mtimes as coarse as 1 or 2 s, so a second
			// save may leave both as they were: only the content tells.
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			mustWrite(t, p, edited)
			if err := os.Chtimes(p, fi.ModTime(), fi.ModTime()); err != nil {
				t.Fatal(err)
			}
			w.changed()
		}},
		{"same content written again", func(t *testing.T, p string, w *watched) { mustWrite(t, p, initial) }},
		{"touched", func(t *testing.T, p string, w *watched) {
			now := time.Now()
			if err := os.Chtimes(p, now, now); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Under synctest the ticker runs on a fake clock: the test takes
			// no real time, a wait for onChange ends as soon as Watch calls
			// it, and a wait for its absence lasts exactly so many ticks.
			synctest.Test(t, func(t *testing.T) {
				path := writeFile(t, t.TempDir(), "proxy.toml", initial)
				ctx, cancel := context.WithCancel(t.Context())
				w := &watched{t: t, every: every, calls: make(chan struct{}, 8)}
				done := make(chan struct{})
				go func() {
					defer close(done)
					Watch(ctx, path, every, func() { w.calls <- struct{}{} })
				}()
				synctest.Wait() // Watch has taken its first look

				tt.run(t, path, w)
				w.quiet(3 * every) // and nothing more

				cancel()
				synctest.Wait()
				select {
				case <-done:
				default:
					t.Error("Watch did not return after ctx was cancelled")
				}
			})
		})
	}
}

// watched is what a TestWatch case waits on: Watch's onChange calls.
type watched struct {
	t     *testing.T
	every time.Duration
	calls chan struct{}
}

// changed waits for one onChange call, which is due within two ticks (one
// to see the change, the settle pause, one to spare).
func (w *watched) changed() {
	w.t.Helper()
	select {
	case <-w.calls:
	case <-time.After(2 * w.every):
		w.t.Fatal("onChange not called within 2 ticks of the change")
	}
}

// quiet checks that onChange is not called for d.
func (w *watched) quiet(d time.Duration) {
	w.t.Helper()
	select {
	case <-w.calls:
		w.t.Errorf("onChange called; want no call")
	case <-time.After(d):
	}
}

// TestWatchRealClock runs Watch on the real clock, where mtimes are
// trusted, with an editor-style save (temp file renamed over). Saves repeat
// until one is seen, so it does not matter whether the first came before
// Watch's first look.
func TestWatchRealClock(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "proxy.toml", "burst = 1\n")
	ctx, cancel := context.WithCancel(t.Context())
	changed := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		Watch(ctx, path, 5*time.Millisecond, func() {
			select {
			case changed <- struct{}{}:
			default:
			}
		})
	}()
	defer func() {
		cancel()
		<-done
	}()

	deadline := time.After(2 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for i := 2; ; i++ {
		tmp := writeFile(t, dir, ".proxy.toml.swp", "burst = "+string(rune('0'+i%10))+"\n")
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
		select {
		case <-changed:
			return
		case <-deadline:
			t.Fatal("onChange not called within 2s of saves")
		case <-tick.C:
		}
	}
}
