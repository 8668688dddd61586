package config

import (
	"context"
	"crypto/sha256"
	"os"
	"time"
)

// Watch calls onChange each time the file at path has new content, checking
// every `every` (0 or less means 1s), until ctx is done. It runs in the
// caller's goroutine and starts none.
//
// It polls, because editors replace files in many ways (write in place,
// rename a temp file over, delete and recreate, swap a symlink) and
// inotify-style events follow the old inode; and it hashes the whole file
// (a config file is small), because mtime and size are too coarse to tell
// two quick saves apart. So a touch or a save without edits does not fire,
// nor does a file missing for a moment between an editor's delete and
// create: onChange fires once it is back with different content.
//
// Watch does not reload: the caller calls Load again, and keeps its running
// config if the new one is invalid. A path of "" (the embedded defaults)
// never changes.
func Watch(ctx context.Context, path string, every time.Duration, onChange func()) {
	if every <= 0 {
		every = time.Second
	}
	// A change seen mid-write (an editor truncates, then writes) is read
	// again after this pause and reported only once it holds still.
	settle := min(every/2, 250*time.Millisecond)
	last, _ := hash(path)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cur, ok := hash(path)
		if !ok || cur == last {
			continue // missing keeps what we knew: a rename-over may be half done
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(settle):
		}
		if again, ok := hash(path); ok && again == cur {
			last = cur
			onChange()
		} // else still being written; the next tick looks again
	}
}

// hash returns the file's SHA-256, or false if it cannot be read right now.
func hash(path string) ([sha256.Size]byte, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return [sha256.Size]byte{}, false
	}
	return sha256.Sum256(b), true
}
