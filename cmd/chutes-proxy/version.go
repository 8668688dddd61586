package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// Release builds stamp these at link time (.goreleaser.yaml's ldflags:
// -X main.stampVersion=… -X main.stampCommit=… -X main.stampDate=…). Empty
// means not stamped: the build info the Go toolchain records is used
// instead, which knows the module version of a `go install …@v1.2.3` and
// the VCS revision of a build from a checkout (unless -buildvcs=false).
var stampVersion, stampCommit, stampDate string

// build says which code this binary is.
type build struct {
	Version  string // "1.2.3", or "dev" when neither stamped nor installed by version
	Commit   string // the full VCS revision, "" when unknown
	Modified bool   // built from a checkout with uncommitted changes
	Date     string // the commit's (or the release's) time, "" when unknown
	Go       string // runtime.Version()
	Platform string // GOOS/GOARCH
}

// readBuild prefers the stamps and fills what they leave out from
// debug.ReadBuildInfo.
func readBuild() build {
	b := build{Version: stampVersion, Commit: stampCommit, Date: stampDate,
		Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		var rev, at string
		var modified bool
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				at = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if v := bi.Main.Version; b.Version == "" && v != "(devel)" {
			b.Version = v
		}
		if b.Commit == "" { // a stamped commit is a release's, never modified
			b.Commit, b.Modified = rev, modified
		}
		b.Date = cmp.Or(b.Date, at)
	}
	b.Version = cmp.Or(b.Version, "dev")
	return b
}

// short is the version with the commit's first 12 characters, for the log.
func (b build) short() string {
	if b.Commit == "" {
		return b.Version
	}
	s := b.Version + " (" + b.Commit[:min(12, len(b.Commit))]
	if b.Modified {
		s += "+dirty"
	}
	return s + ")"
}

// version is what the serve log says about the binary.
func version() string { return readBuild().short() }

func runVersion(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("version", "Print the version, the commit and the Go version.", stdout, stderr)
	if code, done := parse(fs, args); done {
		return code
	}
	b := readBuild()
	commit := cmp.Or(b.Commit, "unknown")
	if b.Modified {
		commit += " (modified)"
	}
	if b.Date != "" {
		commit += ", " + b.Date
	}
	fmt.Fprintf(stdout, "chutes-proxy %s\ncommit: %s\ngo:     %s %s\n", b.Version, commit, b.Go, b.Platform)
	return 0
}
