// Package logfmt writes log/slog records exactly as slog.TextHandler does,
// but formats the common request line itself instead of through slog's
// general machinery.
package logfmt

import (
	"context"
	"io"
	"log/slog"
	"sync"
)

// NewTextHandler returns a slog.Handler whose output is byte for byte that of
// slog.NewTextHandler(w, opts), faster for the common record.
//
// Records whose attributes are all strings, integers, bools, durations,
// floats or times are formatted here. A record with a group, a LogValuer or
// any other value, and every record of a handler derived with WithGroup or
// with a LogValuer in WithAttrs, goes to a slog.TextHandler built with the
// same options, so the output stays identical; with opts.AddSource every
// record would, so that handler is returned as is. A nil opts means the
// zero HandlerOptions, as for slog.
func NewTextHandler(w io.Writer, opts *slog.HandlerOptions) slog.Handler {
	if opts == nil {
		opts = &slog.HandlerOptions{}
	}
	if opts.AddSource {
		return slog.NewTextHandler(w, opts)
	}
	return &handler{sh: &shared{w: w, opts: *opts}}
}

// shared is what a handler and all handlers derived from it have in common.
type shared struct {
	w    io.Writer
	opts slog.HandlerOptions
	// mu serializes writes to w, ours and the delegate's alike: they may
	// interleave records on one writer that is not safe for concurrent use.
	mu sync.Mutex
}

// lockedWriter is the delegate's writer: slog locks its own mutex, which
// ours knows nothing about, so each Write also takes ours.
type lockedWriter struct{ sh *shared }

func (lw lockedWriter) Write(p []byte) (int, error) {
	lw.sh.mu.Lock()
	defer lw.sh.mu.Unlock()
	return lw.sh.w.Write(p)
}

type handler struct {
	sh *shared
	// pfa and groupPrefix are slog's preformattedAttrs and groupPrefix.
	// groupPrefix is non-empty only after slog's quirk of leaving a group
	// open when ReplaceAttr drops all of its members.
	pfa         []byte
	groupPrefix string

	// parent, attrs and reps rebuild the same handler from slog when a
	// record must be delegated: h is parent.WithAttrs(attrs), and reps are
	// what ReplaceAttr returned while formatting attrs, in call order.
	parent *handler
	attrs  []slog.Attr
	reps   []slog.Attr

	once  sync.Once
	inner slog.Handler // built by delegate
}

func (h *handler) Enabled(_ context.Context, l slog.Level) bool {
	minLevel := slog.LevelInfo
	if h.sh.opts.Level != nil {
		minLevel = h.sh.opts.Level.Level()
	}
	return l >= minLevel
}

func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	// slog returns the receiver when there is nothing to add; so do we, so
	// that the delegate's chain of WithAttrs calls matches ours.
	if countEmptyGroups(as) == len(as) {
		return h
	}
	// A LogValuer is resolved at With time. If its LogValue panics, slog
	// writes the stack of its own handler into the value, which we cannot
	// reproduce: let slog resolve it.
	if hasLogValuer(as) {
		return h.delegate().WithAttrs(as)
	}
	h2 := &handler{sh: h.sh, pfa: h.pfa, groupPrefix: h.groupPrefix, parent: h, attrs: as}
	s := newState(h.sh.opts.ReplaceAttr)
	defer s.free()
	s.buf = append(s.buf, h.pfa...)
	s.sep = len(h.pfa) > 0
	s.prefix = append(s.prefix, h.groupPrefix...)
	if s.rep != nil {
		s.groups = noGroups
		s.reps = &h2.reps
	}
	if s.appendAttrs(as) {
		h2.pfa = append([]byte(nil), s.buf...)
		h2.groupPrefix = string(s.prefix)
	}
	return h2
}

// WithGroup hands the group, and everything derived from it, to slog.
func (h *handler) WithGroup(name string) slog.Handler {
	return h.delegate().WithGroup(name)
}

func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	if !simple(r) {
		return h.delegate().Handle(ctx, r)
	}
	s := newState(h.sh.opts.ReplaceAttr)
	defer s.free()
	// Built-in attributes, as commonHandler.handle: ReplaceAttr sees nil
	// groups for them.
	if !r.Time.IsZero() {
		t := r.Time.Round(0) // strip monotonic to match Attr behavior
		if s.rep == nil {
			s.buf = append(s.buf, slog.TimeKey+"="...)
			s.buf = appendTime(s.buf, t)
			s.sep = true
		} else {
			s.appendAttr(slog.Time(slog.TimeKey, t), slog.KindTime)
		}
	}
	if s.rep == nil {
		s.appendSep()
		s.buf = append(s.buf, slog.LevelKey+"="...)
		s.appendString(r.Level.String())
		s.buf = append(s.buf, " "+slog.MessageKey+"="...)
		s.appendString(r.Message)
		s.sep = true
	} else {
		s.appendAttr(slog.Any(slog.LevelKey, r.Level), slog.KindAny)
		s.appendAttr(slog.String(slog.MessageKey, r.Message), slog.KindString)
	}
	if len(h.pfa) > 0 {
		s.appendSep()
		s.buf = append(s.buf, h.pfa...)
		s.sep = true
	}
	if r.NumAttrs() > 0 {
		s.prefix = append(s.prefix, h.groupPrefix...)
		if s.rep != nil {
			s.groups = noGroups
		}
		r.Attrs(s.appendRecordAttr)
	}
	s.buf = append(s.buf, '\n')
	h.sh.mu.Lock()
	defer h.sh.mu.Unlock()
	_, err := h.sh.w.Write(s.buf)
	return err
}

// simple reports whether r can be formatted here without calling anything
// that slog would call differently.
func simple(r slog.Record) bool {
	ok := true
	r.Attrs(func(a slog.Attr) bool {
		switch a.Value.Kind() {
		case slog.KindAny:
			ok = a.Key == "" && a.Value.Any() == nil // the zero Attr is dropped
		case slog.KindGroup, slog.KindLogValuer:
			ok = false
		}
		return ok
	})
	return ok
}

// delegate returns the slog.TextHandler equivalent to h, building it on
// first use: most handlers never need one.
func (h *handler) delegate() slog.Handler {
	h.once.Do(func() {
		var chain []*handler // h and its ancestors, root excluded, newest first
		for p := h; p.parent != nil; p = p.parent {
			chain = append(chain, p)
		}
		opts := h.sh.opts
		var rp *replayer
		if opts.ReplaceAttr != nil && len(chain) > 0 {
			// slog would call ReplaceAttr again for the With attrs while we
			// rebuild; it was called for them already, so play back what
			// it returned then.
			rp = &replayer{rep: opts.ReplaceAttr}
			for i := len(chain) - 1; i >= 0; i-- {
				rp.queue = append(rp.queue, chain[i].reps...)
			}
			opts.ReplaceAttr = rp.replace
		}
		var inner slog.Handler = slog.NewTextHandler(lockedWriter{h.sh}, &opts)
		for i := len(chain) - 1; i >= 0; i-- {
			inner = inner.WithAttrs(chain[i].attrs)
		}
		if rp != nil {
			rp.queue = nil // from now on records and later With calls: live
		}
		h.inner = inner
	})
	return h.inner
}

// replayer is the delegate's ReplaceAttr: it returns the recorded results
// while the delegate is rebuilt, then calls the caller's function. Only the
// goroutine in delegate's once touches queue until it is nil.
type replayer struct {
	rep   func([]string, slog.Attr) slog.Attr
	queue []slog.Attr
}

func (p *replayer) replace(groups []string, a slog.Attr) slog.Attr {
	if len(p.queue) > 0 {
		a = p.queue[0]
		p.queue = p.queue[1:]
		return a
	}
	return p.rep(groups, a)
}

// countEmptyGroups is slog's: an empty group is dropped.
func countEmptyGroups(as []slog.Attr) int {
	n := 0
	for _, a := range as {
		if a.Value.Kind() == slog.KindGroup && len(a.Value.Group()) == 0 {
			n++
		}
	}
	return n
}

func hasLogValuer(as []slog.Attr) bool {
	for _, a := range as {
		switch a.Value.Kind() {
		case slog.KindLogValuer:
			return true
		case slog.KindGroup:
			if hasLogValuer(a.Value.Group()) {
				return true
			}
		}
	}
	return false
}
