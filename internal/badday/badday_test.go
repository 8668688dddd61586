package badday

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// TestScenarioFiles: every file a scenario names is embedded and passes the
// simulator's own checks, and model-a is in each bad file.
func TestScenarioFiles(t *testing.T) {
	files, err := loadScenarios()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"healthy.toml", "local.toml"} {
		if _, ok := files[name]; !ok {
			t.Errorf("%s is missing", name)
		}
	}
	for _, sc := range Scenarios {
		for _, f := range []string{sc.Base, sc.Bad} {
			if f == "" {
				continue
			}
			s, ok := files[f]
			if !ok {
				t.Errorf("%s: %s is missing", sc.Name, f)
				continue
			}
			if len(s.Models) != 1 || s.Models[0].ID != ModelA {
				t.Errorf("%s: %s should script %s alone, scripts %v", sc.Name, f, ModelA, s.Models)
			}
		}
	}
}

// TestDrive: a storm that comes and goes is turned on and off on time, and
// the last recovery is the last spell's end, not the bad phase's.
func TestDrive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sc := Scenario{Bad: "x.toml", On: 2 * time.Second, Off: 3 * time.Second}
		tl := Timeline{Warmup: time.Second, Bad: 9 * time.Second}
		t0 := time.Now()
		ph := &phases{}
		began := time.Duration(0)
		err := drive(t.Context(), t0, sc, tl, func(bad bool) error {
			ph.set(time.Since(t0), bad)
			return nil
		}, func() { began = time.Since(t0) })
		if err != nil {
			t.Fatal(err)
		}
		want := []mark{{1 * time.Second, true}, {3 * time.Second, false}, {6 * time.Second, true}, {8 * time.Second, false}, {10 * time.Second, false}}
		if began != time.Second || len(ph.marks) != len(want) {
			t.Fatalf("began %v, marks %v; want 1s, %v", began, ph.marks, want)
		}
		for i := range want {
			if ph.marks[i] != want[i] {
				t.Fatalf("marks %v; want %v", ph.marks, want)
			}
		}
		if got := ph.lastRecovery(); got != 8*time.Second {
			t.Errorf("last recovery %v; want 8s", got)
		}
		if ph.healthy(ModelA, 7*time.Second) || !ph.healthy(ModelA, 9*time.Second) || !ph.healthy(ModelB, 7*time.Second) {
			t.Error("healthy() does not follow the marks")
		}
	})
}

func TestFigures(t *testing.T) {
	s := time.Second
	r := &Result{BadStart: 1 * s, BadEnd: 5 * s, Recovered: 5 * s,
		Requests: map[int64]int{1: 1, 2: 2, 3: 1, 4: 3, 5: 1, 6: 1}}
	r.Replies = []Reply{
		{ID: 1, Start: 500 * time.Millisecond, OK: true, TTFT: 9 * s, Model: ModelA}, // warm-up: left out
		{ID: 2, Start: 2 * s, OK: true, TTFT: 2 * s, Model: ModelB},
		{ID: 3, Start: 3 * s, OK: true, TTFT: 1 * s, Model: ModelB},
		{ID: 4, Start: 4 * s, Why: "503 all_models_unavailable"},
		{ID: 5, Start: 6 * s, OK: true, TTFT: s, Model: ModelB},
		{ID: 6, Start: 7 * s, OK: true, TTFT: s, Model: ModelA},
	}
	f := r.Figures()
	if f.Replies != 3 || f.Served != 2 || f.Lost != 1 || f.LostWhy["503 all_models_unavailable"] != 1 {
		t.Errorf("replies %d served %d lost %d %v; want 3, 2, 1", f.Replies, f.Served, f.Lost, f.LostWhy)
	}
	if f.P50 != s || f.P95 != 2*s || f.Max != 2*s || f.FallbackP95 != s {
		t.Errorf("p50 %v p95 %v max %v fallback %v; want 1s 2s 2s 1s", f.P50, f.P95, f.Max, f.FallbackP95)
	}
	if f.PerServed != 3 { // 2 + 1 + 3 requests for 2 served
		t.Errorf("requests per served %v; want 3", f.PerServed)
	}
	if !f.HasRecov || f.NotAgain || f.Recovery != 2*s {
		t.Errorf("recovery %v (not again %v); want 2s", f.Recovery, f.NotAgain)
	}
}

// TestRunSmoke plays Chutes' outage for a second through the proxy and the
// baseline: the local provider serves every reply, Chutes comes back on its
// address, and the report has its table and targets.
func TestRunSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("plays a 2 s scenario")
	}
	o := Defaults()
	o.Only, o.Setups = []string{"outage"}, []string{Proxy.Name, Baseline.Name}
	o.Users = 2
	o.Timeline = Timeline{Warmup: 400 * time.Millisecond, Bad: time.Second, Recovery: 600 * time.Millisecond}
	var out bytes.Buffer
	o.Out = &out
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	results, err := Run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	rep := out.String()
	for _, want := range []string{"| outage | proxy |", "| outage | baseline |", "upstream requests per served reply ≤ 1.2"} {
		if !strings.Contains(rep, want) {
			t.Errorf("the report lacks %q:\n%s", want, rep)
		}
	}
	for _, r := range results {
		f := r.Figures()
		if f.Served == 0 || f.Lost > 0 {
			t.Errorf("%s: %d served, %d lost (%v) while local:model-c was healthy", r.Setup.Name, f.Served, f.Lost, f.LostWhy)
		}
		if r.Refused == 0 {
			t.Errorf("%s: no attempt was refused: was Chutes down?", r.Setup.Name)
		}
	}
}
