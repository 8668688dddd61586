package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/chutes"
	"github.com/chutes-proxy/chutes-proxy/internal/failover"
	"github.com/chutes-proxy/chutes-proxy/internal/health"
	"github.com/chutes-proxy/chutes-proxy/internal/human"
)

// defaultStatusURL is where a proxy with the default config listens.
const defaultStatusURL = "http://127.0.0.1:8787"

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("status", "Print a running proxy's headline and per-model table, from its /status.", stdout, stderr)
	base := fs.String("url", defaultStatusURL, "the proxy's address")
	if code, done := parse(fs, args); done {
		return code
	}
	st, err := fetchStatus(ctx, statusURL(*base))
	if err != nil {
		fmt.Fprintln(stderr, "chutes-proxy status:", err)
		return 1
	}
	printStatus(stdout, st, time.Now())
	return 0
}

// statusURL accepts what a user may type: "127.0.0.1:8787", the base URL
// the app uses (".../v1"), or the status URL itself.
func statusURL(s string) string {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	s = strings.TrimRight(s, "/")
	s = strings.TrimSuffix(s, "/status")
	s = strings.TrimSuffix(s, "/v1")
	return s + "/status"
}

func fetchStatus(ctx context.Context, u string) (*health.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("bad --url: %w", err)
	}
	c := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			return nil, fmt.Errorf("no chutes-proxy runs at %s (connection refused). Start it with `chutes-proxy serve`, or pass --url with the address it listens on (its log says it)", strings.TrimSuffix(u, "/status"))
		case errors.Is(err, context.DeadlineExceeded):
			return nil, fmt.Errorf("%s did not answer within 10 s: is it a chutes-proxy?", u)
		}
		return nil, fmt.Errorf("cannot reach %s: %s. Is chutes-proxy running there? Pass --url to point elsewhere", u, failover.Describe(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %s: is it a chutes-proxy (version with /status)?", u, resp.Status)
	}
	var st health.Status
	if err := json.NewDecoder(io.LimitReader(resp.Body, 8<<20)).Decode(&st); err != nil || st.Headline == "" {
		return nil, fmt.Errorf("%s did not answer with chutes-proxy's status JSON: is it a chutes-proxy?", u)
	}
	return &st, nil
}

// printStatus writes the headline, the per-model table, the chains and the
// quota lines.
func printStatus(w io.Writer, st *health.Status, now time.Time) {
	fmt.Fprintln(w, st.Headline)
	for _, warn := range st.Warnings {
		fmt.Fprintln(w, "warning:", warn)
	}
	fmt.Fprintln(w)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL\tSTATE\tAVAILABLE\tSUCCESS\tP50\tP95\tREQS\tNOTE")
	for _, m := range st.Models {
		avail, note := "yes", "-"
		if e := m.LastError; e != nil {
			note = e.Reason
			if e.Status != 0 {
				note = strconv.Itoa(e.Status) + " " + note
			}
			note = "last error " + human.Duration(now.Sub(e.Time).Round(time.Second)) + " ago: " + human.Truncate(note, 60)
		}
		if !m.Available {
			avail, note = "no", m.WhyUnavailable
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", m.ID, m.State, avail,
			pct(m.SuccessRate), msText(m.LatencyP50MS), msText(m.LatencyP95MS), m.Requests, note)
	}
	tw.Flush()
	if len(st.Models) > 0 {
		fmt.Fprintf(w, "(success, latency and requests over the last %d min)\n", st.Models[0].WindowS/60)
	}

	if len(st.Chains) > 0 {
		fmt.Fprintln(w, "\nChains:")
		for _, c := range st.Chains {
			name := c.Model
			if len(c.Aliases) > 0 {
				name = strings.Join(c.Aliases, ", ")
			}
			serving := "no model available"
			if c.Serving != "" {
				serving = "serving: " + c.Serving
			}
			fmt.Fprintf(w, "  %s: %s  (%s)\n", name, strings.Join(c.Chain, " → "), serving)
		}
	}

	fmt.Fprintln(w)
	fmt.Fprintf(w, "Upstream:  %s %s\n", st.Upstream.BaseURL, reach(st.Upstream))
	for _, p := range st.Providers {
		line := p.Name + " " + p.BaseURL + " " + reach(p.UpstreamStatus)
		switch n := p.ModelsListed; {
		case n == nil:
		case *n == 1:
			line += ", 1 model listed"
		default:
			line += fmt.Sprintf(", %d models listed", *n)
		}
		key := p.Key.State
		if p.Key.Prefix != "" {
			key = p.Key.Prefix + " " + key
		}
		if p.Key.State == chutes.KeyRejected {
			key += " (" + p.Key.Detail + ")"
		}
		fmt.Fprintf(w, "Provider:  %s; key %s\n", line, key)
	}
	key := st.Key.State
	if st.Key.Prefix != "" {
		key = st.Key.Prefix + " " + key
	}
	if st.Key.Detail != "" && st.Key.State != chutes.KeyAccepted {
		key += " (" + st.Key.Detail + ")"
	}
	fmt.Fprintf(w, "Key:       %s\n", key)
	if a := st.Account; a != nil && a.Summary != "" {
		fmt.Fprintf(w, "Chutes:    %s\n", a.Summary)
	}
	if q := st.Quota; q != nil {
		if q.Limit > 0 {
			fmt.Fprintf(w, "Proxy:     %d of %d requests today (cap resets at 00:00 UTC)\n", q.Count, q.Limit)
		} else {
			fmt.Fprintf(w, "Proxy:     %d requests today (no cap)\n", q.Count)
		}
	}
}

// reach says what the last probe of an upstream found.
func reach(u health.UpstreamStatus) string {
	switch p := u.Probe; {
	case p != nil && p.FailedStep == "":
		return fmt.Sprintf("reachable, %d ms", p.LatencyMS)
	case p != nil && u.Reachable != nil && *u.Reachable:
		return "reachable, " + p.Error // it answered, refusing the key
	case p != nil:
		return "unreachable (" + p.FailedStep + "): " + p.Error
	case u.ProbeIntervalS == 0:
		return "not probed ([health] probe_interval is 0s)"
	}
	return "not probed"
}

func pct(v *float64) string {
	if v == nil {
		return "-"
	}
	return strconv.Itoa(int(*v*100+0.5)) + "%"
}

// msText is a latency in milliseconds, "-" when unknown.
func msText(v *int64) string {
	if v == nil {
		return "-"
	}
	return human.Duration(time.Duration(*v) * time.Millisecond)
}
