// Package clients holds the client-compatibility suites: the proxy driven the
// way the apps people use drive it (the official OpenAI SDKs for Go and Node,
// SillyTavern's server, JanitorAI's and any other browser page, Open WebUI
// from Docker). It has no code of its own; the tests start the proxy
// in-process over loopback in front of a fake Chutes or the simulator.
package clients
