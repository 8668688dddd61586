package config

import (
	"context"
	"os"
	"sync/atomic"
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
		name   string
		change func(t *testing.T, path string)
		want   int32 // onChange calls
	}{
		{"write in place", func(t *testing.T, p string) { mustWrite(t, p, edited) }, 1},
		{"rename over", func(t *testing.T, p string) {
			mustWrite(t, p+".tmp", edited)
			if err := os.Rename(p+".tmp", p); err != nil {
				t.Fatal(err)
			}
		}, 1},
		{"delete, then recreate", func(t *testing.T, p string) {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			time.Sleep(2 * every) // missing for a while: not a change
			mustWrite(t, p, edited)
		}, 1},
		{"two saves", func(t *testing.T, p string) {
			mustWrite(t, p, edited)
			time.Sleep(2 * every)
			mustWrite(t, p, initial)
		}, 2},
		{"same content written again", func(t *testing.T, p string) { mustWrite(t, p, initial) }, 0},
		{"touched", func(t *testing.T, p string) {
			now := time.Now()
			if err := os.Chtimes(p, now, now); err != nil {
				t.Fatal(err)
			}
		}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Under synctest the ticker runs on a fake clock: the test takes
			// no real time, and Wait says when Watch is idle.
			synctest.Test(t, func(t *testing.T) {
				path := writeFile(t, t.TempDir(), "proxy.toml", initial)
				ctx, cancel := context.WithCancel(t.Context())
				var calls atomic.Int32
				done := make(chan struct{})
				go func() {
					defer close(done)
					Watch(ctx, path, every, func() { calls.Add(1) })
				}()
				synctest.Wait() // Watch has taken its first look

				tt.change(t, path)
				time.Sleep(3 * every)
				synctest.Wait()
				if got := calls.Load(); got != tt.want {
					t.Errorf("onChange called %d times; want %d", got, tt.want)
				}

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

// TestLookRacy checks the stat shortcut: an old mtime is trusted, so an
// unchanged stat skips reading; a recent one is not, since a same-size
// write in the same mtime tick would leave the stat as it was.
func TestLookRacy(t *testing.T) {
	tests := []struct {
		name     string
		mtime    time.Time
		wantRacy bool
		wantSeen bool // the same-stat edit is noticed
	}{
		{"old mtime", time.Now().Add(-time.Hour), false, false},
		{"recent mtime", time.Now(), true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeFile(t, t.TempDir(), "proxy.toml", "burst = 1")
			if err := os.Chtimes(p, tt.mtime, tt.mtime); err != nil {
				t.Fatal(err)
			}
			first := look(p, fileState{})
			if !first.exists || first.racy != tt.wantRacy {
				t.Fatalf("look() = exists %v, racy %v; want true, %v", first.exists, first.racy, tt.wantRacy)
			}
			if err := os.WriteFile(p, []byte("burst = 2"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(p, tt.mtime, tt.mtime); err != nil {
				t.Fatal(err)
			}
			if seen := look(p, first).sum != first.sum; seen != tt.wantSeen {
				t.Errorf("same-stat edit seen = %v; want %v", seen, tt.wantSeen)
			}
		})
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
