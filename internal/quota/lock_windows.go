//go:build windows

package quota

import (
	"os"

	"golang.org/x/sys/windows"
)

// lockFile takes an exclusive LockFileEx lock, Windows' flock, on path
// (created if missing), which serialises the read-merge-write of every
// proxy sharing the state file. As on unix a sidecar file is locked, so
// that the lock never stands in the way of the rename over the state file.
// The lock goes with the handle: a proxy that dies releases it.
func lockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	h := windows.Handle(f.Fd())
	// One byte at offset 0 is the whole protocol; without FAIL_IMMEDIATELY
	// the call waits for the holder, as LOCK_EX does.
	ol := new(windows.Overlapped)
	if err := windows.LockFileEx(h, windows.LOCKFILE_EXCLUSIVE_LOCK, 0, 1, 0, ol); err != nil {
		f.Close()
		return nil, os.NewSyscallError("LockFileEx", err)
	}
	return func() {
		_ = windows.UnlockFileEx(h, 0, 1, 0, ol)
		f.Close()
	}, nil
}
