// Package quota is the proxy's own daily request count and cap ([quota]):
// it counts upstream requests per UTC day, keeps the count in a small JSON
// state file that survives restarts and is shared safely by several proxies,
// and answers 429 daily_quota_exhausted at the limit.
package quota

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/diagnose"
)

// WarnPercent is the share of the limit from which /status warns.
const WarnPercent = 80

// state is the file's content. Only today's count is kept: the cap is per
// UTC day, so a past day's count matters to nobody.
type state struct {
	Day     string    `json:"day"` // UTC, 2006-01-02
	Count   int       `json:"count"`
	Updated time.Time `json:"updated"`
}

// Options configure a Counter.
type Options struct {
	// File is the state file; "" counts in memory only (lost on restart).
	File string
	// Limit is the daily cap; 0 means no cap (the count is still kept).
	Limit int
	// FlushEvery is how often counts are written; 0 means every second.
	// Counts are never lost between flushes: Close writes the rest.
	FlushEvery time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
	// Now; nil means time.Now.
	Now func() time.Time
}

// Counter counts upstream requests per UTC day. It is safe for concurrent
// use; Add costs a short mutex and never touches the disk.
type Counter struct {
	log   *slog.Logger
	now   func() time.Time
	every time.Duration

	mu      sync.Mutex
	file    string
	limit   int
	day     string // the day of disk and pending
	dayNum  int64  // the same day as days since 1970 (UTC), cheap to compare
	disk    int    // the file's count for day at the last read or write
	pending int    // counted here, not yet written
	problem string // the last state-file problem, "" when none
	probAt  time.Time

	flushMu sync.Mutex // one flush at a time
}

// Open returns a Counter and reads today's count from o.File. It never
// fails: a missing file is a fresh start; an unreadable or corrupt one is
// reported by Snapshot().Problem and in the log, and counting goes on.
func Open(o Options) *Counter {
	c := &Counter{log: o.Logger, now: o.Now, every: o.FlushEvery, file: o.File, limit: max(o.Limit, 0)}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.log = c.log.With("component", "quota")
	if c.now == nil {
		c.now = time.Now
	}
	if c.every <= 0 {
		c.every = time.Second
	}
	c.day = dayOf(c.now())
	_ = c.Flush() // reads the file
	return c
}

// DefaultFile is the state file used when [quota] state_file is empty:
// quota.json in the first of these directories that can be written to.
//
//   - $XDG_STATE_HOME/chutes-proxy
//   - on Windows, %LOCALAPPDATA%\chutes-proxy (os.UserCacheDir's place:
//     per machine, not roaming, so two PCs do not fight over one count)
//   - ~/.local/state/chutes-proxy
//   - the user's cache directory's chutes-proxy (os.UserCacheDir), for a
//     home that is unset, relative or read-only (a service account, an
//     Android app's shell)
//   - the temp directory's chutes-proxy (Termux's is $PREFIX/tmp, private
//     to the app), where a reboot may reset the count, which beats losing
//     it at every restart
//
// It creates the directory it picks. The error lists every place tried.
func DefaultFile() (string, error) {
	var tried []string
	for _, dir := range stateDirs() {
		dir = filepath.Join(dir, "chutes-proxy")
		if err := writable(dir); err != nil {
			if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
				err = pe.Err // the path may be a parent of dir's; dir says more
			}
			tried = append(tried, fmt.Sprintf("%s: %v", dir, err))
			continue
		}
		return filepath.Join(dir, "quota.json"), nil
	}
	return "", fmt.Errorf("no writable state directory for the quota file (set [quota] state_file): %s",
		strings.Join(tried, "; "))
}

// stateDirs lists DefaultFile's candidates, absolute paths only, most
// fitting first.
func stateDirs() []string {
	var dirs []string
	add := func(dir string, err error, elem ...string) {
		dir = filepath.Join(append([]string{dir}, elem...)...)
		if err == nil && filepath.IsAbs(dir) && !slices.Contains(dirs, dir) {
			dirs = append(dirs, dir)
		}
	}
	add(os.Getenv("XDG_STATE_HOME"), nil)
	if runtime.GOOS == "windows" {
		add(os.Getenv("LOCALAPPDATA"), nil)
	}
	home, err := os.UserHomeDir()
	add(home, err, ".local", "state")
	cache, err := os.UserCacheDir()
	add(cache, err)
	add(os.TempDir(), nil)
	return dirs
}

// writable creates dir if need be and proves that a file can be made in
// it; running as root proves nothing about permissions, but a path under
// a regular file or on a read-only file system fails here too.
func writable(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".probe*")
	if err != nil {
		return err
	}
	f.Close()
	return os.Remove(f.Name())
}

func dayOf(t time.Time) string { return t.UTC().Format(time.DateOnly) }

// Add counts n upstream requests now.
func (c *Counter) Add(n int) {
	now := c.now()
	c.mu.Lock()
	c.rollLocked(now)
	c.pending += n
	c.mu.Unlock()
}

// rollLocked starts a new day. Unwritten counts of the day that ended are
// dropped: the file keeps only the current day, whose cap they do not touch.
func (c *Counter) rollLocked(now time.Time) {
	// Every request passes here twice; format the date only when it changes.
	if n := now.Unix() / 86400; n != c.dayNum || c.day == "" {
		if d := dayOf(now); d != c.day {
			c.day, c.disk, c.pending = d, 0, 0
		}
		c.dayNum = n
	}
}

// Today is the number of upstream requests made today, by this process and
// (as of the last flush, at most a second old) every other sharing the file.
func (c *Counter) Today() int {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rollLocked(now)
	return c.disk + c.pending
}

// SetLimit changes the cap (on a config reload); 0 means no cap.
func (c *Counter) SetLimit(n int) {
	c.mu.Lock()
	c.limit = max(n, 0)
	c.mu.Unlock()
}

// SetFile moves counting to another state file (on a config reload): counts
// not yet written go to the new file, which is read and merged. "" keeps
// counting in memory from today's total so far.
func (c *Counter) SetFile(file string) {
	c.flushMu.Lock()
	c.mu.Lock()
	if file == c.file {
		c.mu.Unlock()
		c.flushMu.Unlock()
		return
	}
	c.file, c.problem = file, ""
	if file != "" {
		c.disk = 0 // the new file's count is read by the Flush below
	}
	c.mu.Unlock()
	c.flushMu.Unlock()
	_ = c.Flush()
}

// Gate answers a request with 429 daily_quota_exhausted when today's count
// has reached the limit; it fits proxy.Options.Gate. Requests already in
// flight may take the count slightly past the limit.
func (c *Counter) Gate(context.Context) *diagnose.Error {
	now := c.now()
	c.mu.Lock()
	c.rollLocked(now)
	limit, count := c.limit, c.disk+c.pending
	c.mu.Unlock()
	if limit > 0 && count >= limit {
		return diagnose.DailyQuotaExhausted(limit, count, now)
	}
	return nil
}

// Snapshot is the counter's state for /status.
type Snapshot struct {
	// Day is today, UTC (2006-01-02).
	Day string `json:"day"`
	// Count is today's upstream requests.
	Count int `json:"count"`
	// Limit is [quota] daily_requests; 0 means no cap.
	Limit int `json:"limit"`
	// Percent is Count of Limit, 0 without a cap.
	Percent float64 `json:"percent"`
	// Reset is when the count starts again (00:00 UTC).
	Reset time.Time `json:"reset"`
	// Exhausted is true when requests are refused.
	Exhausted bool `json:"exhausted"`
	// Warning is set from WarnPercent % of the limit.
	Warning string `json:"warning,omitempty"`
	// File is the state file, "" when counting in memory only.
	File string `json:"state_file"`
	// Problem is the last trouble with the state file (corrupt, not
	// writable), "" when none.
	Problem string `json:"problem,omitempty"`
}

// Snapshot returns the state now.
func (c *Counter) Snapshot() Snapshot {
	now := c.now()
	c.mu.Lock()
	c.rollLocked(now)
	s := Snapshot{Day: c.day, Count: c.disk + c.pending, Limit: c.limit, Reset: diagnose.NextUTCMidnight(now),
		File: c.file, Problem: c.problem}
	c.mu.Unlock()
	if s.Limit > 0 {
		s.Percent = float64(s.Count) * 100 / float64(s.Limit)
		s.Exhausted = s.Count >= s.Limit
		switch {
		case s.Exhausted:
			s.Warning = fmt.Sprintf("the proxy's daily quota is used up (%d of %d): requests are refused until 00:00 UTC", s.Count, s.Limit)
		case s.Percent >= WarnPercent:
			s.Warning = fmt.Sprintf("%.0f%% of the proxy's daily quota used (%d of %d)", s.Percent, s.Count, s.Limit)
		}
	}
	return s
}

// Run writes counts every FlushEvery until ctx ends, then once more.
func (c *Counter) Run(ctx context.Context) {
	t := time.NewTicker(c.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			_ = c.Flush()
			return
		case <-t.C:
			_ = c.Flush()
		}
	}
}

// Close writes the counts not yet written.
func (c *Counter) Close() error { return c.Flush() }

// Flush merges the counts not yet written into the state file under its
// lock (read, add, write a temp file, rename), and learns what other
// processes counted. Without a file it does nothing. On failure the counts
// stay pending for the next flush.
func (c *Counter) Flush() error {
	c.flushMu.Lock()
	defer c.flushMu.Unlock()

	now := c.now()
	c.mu.Lock()
	c.rollLocked(now)
	file, day, n := c.file, c.day, c.pending
	c.mu.Unlock()
	if file == "" {
		return nil
	}

	total, problem, err := merge(file, day, n, now)
	c.mu.Lock()
	defer c.mu.Unlock()
	if problem != "" && problem != c.problem {
		c.log.Warn("quota state file problem", "file", file, "problem", problem)
	}
	if problem != "" {
		c.problem, c.probAt = problem, now
	}
	if err != nil {
		c.problem, c.probAt = err.Error(), now
		c.log.Warn("quota state not saved; counting goes on and saving is retried", "file", file, "err", err)
		return err
	}
	if c.file != file || c.day != day {
		return nil // moved on meanwhile; the next flush deals with it
	}
	c.pending -= n
	c.disk = total
	if problem == "" && c.problem != "" && now.Sub(c.probAt) > time.Hour {
		c.problem = "" // an old problem, long since fixed
	}
	return nil
}

// merge adds n to day's count in file, atomically and under the file's lock,
// and returns the new total. problem reports a corrupt file, which is moved
// aside (to file.corrupt) and counted from 0.
func merge(file, day string, n int, now time.Time) (total int, problem string, err error) {
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return 0, "", fmt.Errorf("creating the quota state directory: %w", err)
	}
	unlock, err := lockFile(file + ".lock")
	if err != nil {
		return 0, "", fmt.Errorf("locking %s.lock: %w", file, err)
	}
	defer unlock()

	var st state
	b, err := os.ReadFile(file)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return 0, "", fmt.Errorf("reading the quota state: %w", err)
	default:
		if err := json.Unmarshal(b, &st); err != nil || st.Count < 0 || (st.Day != "" && !validDay(st.Day)) {
			aside := file + ".corrupt"
			_ = os.Rename(file, aside)
			problem = fmt.Sprintf("the quota state file %s was corrupt (%s); it was moved to %s and today's count restarted from what this proxy counted",
				file, corruptWhy(err, st), aside)
			st = state{}
		}
	}
	switch {
	case st.Day == day:
	case st.Day > day:
		// Another proxy's clock is already in the next day; our pending
		// counts belong to a day that has ended.
		return st.Count, problem, nil
	default:
		st = state{Day: day}
	}
	if n == 0 && problem == "" {
		return st.Count, "", nil // nothing to write
	}
	st.Count += n
	st.Updated = now.UTC()
	if err := writeAtomic(file, st); err != nil {
		return 0, problem, err
	}
	return st.Count, problem, nil
}

func validDay(d string) bool {
	_, err := time.Parse(time.DateOnly, d)
	return err == nil
}

func corruptWhy(err error, st state) string {
	if err != nil {
		return err.Error()
	}
	if st.Count < 0 {
		return "negative count"
	}
	return fmt.Sprintf("bad day %q", st.Day)
}

// writeAtomic writes st to a temp file in file's directory and renames it
// over file, so that a reader never sees half a file.
func writeAtomic(file string, st state) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), filepath.Base(file)+".tmp*")
	if err != nil {
		return fmt.Errorf("writing the quota state: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename: no such file
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("writing the quota state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("writing the quota state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing the quota state: %w", err)
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return fmt.Errorf("replacing the quota state: %w", err)
	}
	return nil
}
