package simulator

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadScenarioTestdata(t *testing.T) {
	sc, err := LoadScenario("testdata/scenario.toml")
	if err != nil {
		t.Fatal(err)
	}
	if sc.Seed != 42 || len(sc.Keys) != 0 || sc.AcceptAnyKey {
		t.Errorf("seed/keys/accept_any_key = %d/%v/%v", sc.Seed, sc.Keys, sc.AcceptAnyKey)
	}
	if sc.DefaultBehavior == nil || sc.DefaultBehavior.Kind != KindNotFound {
		t.Errorf("default_behavior = %+v", sc.DefaultBehavior)
	}
	byID := make(map[string]Behavior)
	for _, m := range sc.Models {
		byID[m.ID] = m.Behavior
	}
	for _, k := range kinds {
		found := false
		for _, m := range sc.Models {
			found = found || m.Kind == k
		}
		if !found {
			t.Errorf("testdata/scenario.toml shows no model of kind %q", k)
		}
	}
	want := Behavior{Kind: KindFlaky, FailureRate: 0.3, TTFT: 200 * time.Millisecond, TokensPerSecond: 40, ContextLength: 32768,
		FailureKind: KindDown}
	if got := byID["Qwen/Qwen2.5-72B-Instruct"]; got != want {
		t.Errorf("Qwen = %+v, want %+v", got, want)
	}
	if got := byID["Qwen/Qwen3-14B"]; got.DropAfter != 5 {
		t.Errorf("drop_after = %d, want 5", got.DropAfter)
	}
	if got := byID["deepseek-ai/DeepSeek-R1-Distill-Llama-70B"]; !got.ErrorAsData {
		t.Error("error_as_data not decoded")
	}
	if got := byID["chutesai/Mistral-Small-3.1-24B-Instruct-2503"]; got.ToolCalls != 1 || got.ToolArguments != `{"city": "Paris"}` {
		t.Errorf("tool_calls/tool_arguments = %d/%q", got.ToolCalls, got.ToolArguments)
	}
	if got := byID["deepseek-ai/DeepSeek-V3"]; got.ReasoningField != ReasoningFieldContent {
		t.Errorf("reasoning_field = %q", got.ReasoningField)
	}
	if got := byID["unsloth/Llama-3.3-70B-Instruct"]; got.Refusal == "" {
		t.Error("refusal not decoded")
	}
	if byID["Qwen/Qwen3-235B-A22B"].EndAfter != 5 || byID["zai-org/GLM-4.5-Air"].StallAfter != 5 {
		t.Error("end_after/stall_after not decoded")
	}
}

// The documentation's example is the tested file, word for word.
func TestDocShowsTestdata(t *testing.T) {
	example, err := os.ReadFile("testdata/scenario.toml")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../../docs/SIMULATOR.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), "```toml\n"+string(example)+"```") {
		t.Error("docs/SIMULATOR.md does not contain testdata/scenario.toml verbatim in a ```toml block")
	}
}

func TestLoadScenarioErrors(t *testing.T) {
	tests := []struct {
		name string
		toml string
		want []string // substrings of the error
	}{
		{"unknown top-level key", "seed = 1\nsede = 2\n", []string{"bad.toml:sede: unknown key (line 2)"}},
		{"unknown model key", "[[models]]\nid = \"a/b\"\ncolour = \"red\"\n", []string{"bad.toml:models.colour: unknown key"}},
		{"unknown default_behavior key", "[default_behavior]\nkind = \"down\"\nretry = 3\n", []string{"default_behavior.retry: unknown key"}},
		{"unknown kind", "[[models]]\nid = \"a/b\"\nkind = \"sleepy\"\n", []string{"bad.toml:models[0].kind: unknown kind \"sleepy\""}},
		{"bad duration", "[[models]]\nid = \"a/b\"\nttft = \"soon\"\n", []string{"bad.toml:models.ttft: want a duration", "(line 3)"}},
		{"bare number duration", "[[models]]\nid = \"a/b\"\nttft = 200\n", []string{"bad.toml:models.ttft: "}},
		{"wrong type", "seed = \"one\"\n", []string{"bad.toml:seed: cannot decode"}},
		{"bad value", "seed = = 1\n", []string{"bad.toml:seed: ", "(line 1)"}},
		{"not toml", "[[models\n", []string{"bad.toml:1:"}},
		{"failure rate above 1", "[[models]]\nid = \"a/b\"\nkind = \"flaky\"\nfailure_rate = 1.5\n", []string{"models[0].failure_rate: must be between 0 and 1"}},
		{"negative drop_after", "[default_behavior]\nkind = \"drop_after\"\ndrop_after = -1\n", []string{"default_behavior.drop_after: must not be negative"}},
		{"negative end_after", "[[models]]\nid = \"a/b\"\nkind = \"end_after\"\nend_after = -2\n", []string{"models[0].end_after: must not be negative"}},
		{"negative stall_after", "[[models]]\nid = \"a/b\"\nstall_after = -1\n", []string{"models[0].stall_after: must not be negative"}},
		{"failure_kind flaky", "[[models]]\nid = \"a/b\"\nkind = \"flaky\"\nfailure_kind = \"flaky\"\n", []string{"models[0].failure_kind: want a kind other than flaky", "drop_after"}},
		{"failure_kind unknown", "[[models]]\nid = \"a/b\"\nfailure_kind = \"cut\"\n", []string{"models[0].failure_kind: ", "got \"cut\""}},
		{"reasoning_field unknown", "[[models]]\nid = \"a/b\"\nreasoning_field = \"thinking\"\n", []string{"models[0].reasoning_field: want \"reasoning_content\" or \"reasoning\""}},
		{"tool_calls negative", "[[models]]\nid = \"a/b\"\ntool_calls = -1\n", []string{"models[0].tool_calls: must be between 0 and 64"}},
		{"tool_calls wrong type", "[[models]]\nid = \"a/b\"\ntool_calls = true\n", []string{"bad.toml:models.tool_calls: "}},
		{"missing id and duplicate", "[[models]]\nkind = \"down\"\n[[models]]\nid = \"x/y\"\n[[models]]\nid = \"x/y\"\n",
			[]string{"models[0].id: missing", "models[2].id: \"x/y\" appears twice"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bad.toml")
			if err := os.WriteFile(path, []byte(tt.toml), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadScenario(path)
			if err == nil {
				t.Fatal("no error")
			}
			msg := strings.ReplaceAll(err.Error(), path, "bad.toml")
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q lacks %q", msg, w)
				}
			}
		})
	}
}

func TestLoadScenarioMissingFile(t *testing.T) {
	if _, err := LoadScenario(filepath.Join(t.TempDir(), "nope.toml")); err == nil {
		t.Fatal("no error for a missing file")
	}
}

func TestDefaultScenario(t *testing.T) {
	sc := DefaultScenario()
	if err := sc.Validate(); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"deepseek-ai/DeepSeek-R1":                      KindDown,
		"Qwen/Qwen2.5-72B-Instruct":                    KindFlaky,
		"chutesai/Mistral-Small-3.1-24B-Instruct-2503": KindHealthy,
		"deepseek-ai/DeepSeek-V3":                      KindHealthy,
	}
	if len(sc.Models) != len(want) {
		t.Fatalf("%d models, want %d", len(sc.Models), len(want))
	}
	for _, m := range sc.Models {
		if want[m.ID] != m.Kind {
			t.Errorf("%s: kind %q, want %q", m.ID, m.Kind, want[m.ID])
		}
		if m.ContextLength == 0 {
			t.Errorf("%s: no context length", m.ID)
		}
	}
	if q := sc.Models[1]; q.FailureRate != 0.3 || q.TTFT != 200*time.Millisecond || q.TokensPerSecond != 40 {
		t.Errorf("Qwen = %+v", q.Behavior)
	}
	if sc.Models[3].Reasoning == "" {
		t.Error("DeepSeek-V3 is not a reasoning model")
	}
}
