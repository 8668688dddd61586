//go:build unix

package quota

import (
	"os"
	"syscall"
)

// lockFile takes an exclusive flock on path (created if missing), which
// serialises the read-merge-write of every proxy sharing the state file. A
// sidecar file is locked because the state file itself is replaced by
// rename, which would leave a lock on the old inode.
func lockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
