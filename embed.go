// Package chutesproxy holds what the binary embeds from the repository root.
package chutesproxy

import _ "embed"

// DefaultConfig is the repository's proxy.toml: the documented defaults, used
// when no config file is found.
//
//go:embed proxy.toml
var DefaultConfig []byte
