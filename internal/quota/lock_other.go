//go:build !unix

package quota

// lockFile is a no-op where flock does not exist: proxies sharing one state
// file there may lose counts to each other (one proxy alone loses none).
func lockFile(string) (unlock func(), err error) { return func() {}, nil }
