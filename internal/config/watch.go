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
// It polls rather than using inotify-style events because editors replace
// files in many ways (write in place, write a temp file and rename it over,
// delete and recreate, swap a symlink) and events follow the old inode;
// a stat per second is cheap and sees them all. A change is the content's
// hash changing, so a save without edits or a touch does not fire; mtime
// and size only decide when the file is worth reading. A file that is
// missing for a moment (between an editor's delete and create) is not a
// change: onChange fires once it is back with different content.
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

	last := look(path, fileState{})
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cur := look(path, last)
		if !cur.exists {
			continue // keep what we knew; a rename-over may be half done
		}
		if cur.sum == last.sum {
			last = cur // a touch: nothing to report, and no need to read it again
			continue
		}
		if settle > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(settle):
			}
			if again := look(path, fileState{}); !again.exists || again.sum != cur.sum {
				continue // still being written; the next tick looks again
			}
		}
		last = cur
		onChange()
	}
}

// racyWindow is how recent an mtime must be for Watch to distrust it: file
// systems keep mtimes as coarse as 1 or 2 s, so a second write in the same
// tick may leave mtime (and, by chance, size) unchanged.
const racyWindow = 3 * time.Second

// fileState is a file as Watch last saw it.
type fileState struct {
	exists bool
	mod    time.Time
	size   int64
	info   os.FileInfo
	sum    [sha256.Size]byte
	// racy means mod was too recent to prove the content unchanged, so the
	// next look reads the file even if stat looks the same, as git does for
	// its index.
	racy bool
}

// look stats path and, when the stat differs from prev (or prev was racy),
// hashes its content; otherwise it keeps prev's hash. A file that cannot be
// read right now comes back with exists false.
func look(path string, prev fileState) fileState {
	fi, err := os.Stat(path)
	if err != nil {
		return fileState{}
	}
	st := fileState{exists: true, mod: fi.ModTime(), size: fi.Size(), info: fi, sum: prev.sum}
	same := prev.exists && st.mod.Equal(prev.mod) && st.size == prev.size && os.SameFile(prev.info, fi)
	if same && !prev.racy {
		return st
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fileState{}
	}
	st.sum = sha256.Sum256(b)
	st.racy = time.Since(st.mod) < racyWindow
	return st
}
