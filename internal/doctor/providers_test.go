package doctor_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/chutes-proxy/chutes-proxy/internal/doctor"
	"github.com/chutes-proxy/chutes-proxy/internal/simulator"
)

const orKey = "sk-or-v1-doctor.providerkey0123"

// server is another provider on loopback that records the Authorization
// header of every request it receives.
type server struct {
	URL   string
	mu    sync.Mutex
	auths []string
}

func serve(t *testing.T, h http.Handler) *server {
	t.Helper()
	s := &server{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.auths = append(s.auths, r.Header.Get("Authorization"))
		s.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	return s
}

func (s *server) authorizations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.auths)
}

// simServer serves a simulator with models under prefix ("/api" makes
// OpenRouter's /api/v1).
func simServer(t *testing.T, sc simulator.Scenario, prefix string) *server {
	sim := simulator.New(sc)
	t.Cleanup(sim.Close)
	return serve(t, http.StripPrefix(prefix, sim))
}

// closedURL is a loopback address where nothing listens.
func closedURL(t *testing.T) string {
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	return srv.URL
}

func openRouter(t *testing.T) *server {
	return simServer(t, simulator.Scenario{Seed: 2, Keys: []string{orKey}, Models: []simulator.ModelScenario{
		{ID: "deepseek/deepseek-r1:free", Behavior: simulator.Behavior{ContextLength: 65536}}, {ID: "meta/llama-3.3-70b:free"},
	}}, "/api")
}

// providerTOML is a [[providers]] table and a [[models]] chain through it.
func providerTOML(name, base, key string, fallbacks ...string) string {
	s := "\n[[providers]]\nname = \"" + name + "\"\nbase_url = \"" + base + "\"\n" + key
	for _, f := range fallbacks {
		s += "\n[[models]]\nid = \"" + f + "\"\n"
	}
	return s
}

func TestDoctorProviders(t *testing.T) {
	tests := []struct {
		name     string
		change   func(t *testing.T, s *setup) []*server
		level    doctor.Level
		has      []string
		hasNot   []string
		failures int
	}{
		{
			name: "reachable, key not refused, models listed",
			change: func(t *testing.T, s *setup) []*server {
				or := openRouter(t)
				s.env["OPENROUTER_API_KEY"] = orKey
				s.toml += providerTOML("openrouter", or.URL+"/api/v1", `api_key_env = "OPENROUTER_API_KEY"`, "openrouter:deepseek/deepseek-r1:free")
				return []*server{or}
			},
			level: doctor.OK,
			has:   []string{"openrouter: GET", "/api/v1/models answered 200 in", "2 models", "its key sk-or-… (api_key_env = \"OPENROUTER_API_KEY\") was not refused", "lists openrouter:deepseek/deepseek-r1:free"},
		},
		{
			name: "a local Ollama that is not running",
			change: func(t *testing.T, s *setup) []*server {
				s.toml += providerTOML("ollama", closedURL(t)+"/v1", "", "ollama:llama3.1:8b")
				return nil
			},
			level:    doctor.Fail,
			has:      []string{"ollama: nothing listens at http://127.0.0.1:", "connection refused", "`ollama serve`", "base_url"},
			failures: 1,
		},
		{
			name: "a local server of unknown kind that is not running",
			change: func(t *testing.T, s *setup) []*server {
				s.toml += providerTOML("local", closedURL(t)+"/v1", "", "local:model")
				return nil
			},
			level:    doctor.Fail,
			has:      []string{"local: nothing listens", "`ollama serve`", "`llama-server --port", "KoboldCpp or LM Studio: start its API server"},
			failures: 1,
		},
		{
			name: "its key refused",
			change: func(t *testing.T, s *setup) []*server {
				ds := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(http.StatusUnauthorized)
					io.WriteString(w, `{"error":{"message":"Authentication Fails, Your api key is invalid","type":"authentication_error"}}`)
				}))
				s.env["DEEPSEEK_API_KEY"] = "sk-deepseek-wrong-000000"
				s.toml += providerTOML("deepseek", ds.URL, `api_key_env = "DEEPSEEK_API_KEY"`, "deepseek:deepseek-chat")
				return []*server{ds}
			},
			level:    doctor.Fail,
			has:      []string{"deepseek:", `provider "deepseek" rejected its API key sk-dee…`, "Authentication Fails", `api_key_env = "DEEPSEEK_API_KEY"`},
			hasNot:   []string{"cpk_"},
			failures: 1,
		},
		{
			name: "a key it wants but none set",
			change: func(t *testing.T, s *setup) []*server {
				ds := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					w.WriteHeader(http.StatusUnauthorized)
					io.WriteString(w, `{"error":{"message":"Missing API key"}}`)
				}))
				s.toml += providerTOML("together", ds.URL+"/v1", "", "together:meta-llama/Llama-3-8b")
				return []*server{ds}
			},
			level:    doctor.Fail,
			has:      []string{"together:", "none is set, so no Authorization header was sent", "api_key or api_key_env"},
			hasNot:   []string{"cpk_"},
			failures: 1,
		},
		{
			name: "Ollama has not pulled the model",
			change: func(t *testing.T, s *setup) []*server {
				ol := simServer(t, simulator.Scenario{Seed: 3, AcceptAnyKey: true, Models: []simulator.ModelScenario{{ID: "llama3.1:8b"}}}, "")
				s.toml += providerTOML("ollama", ol.URL+"/v1", "", "ollama:llama3.1:8b", "ollama:qwen2.5:7b")
				return []*server{ol}
			},
			level: doctor.Warn,
			has:   []string{"ollama: GET", "no key sent", "does not list qwen2.5:7b (models[2].id)", "`ollama pull qwen2.5:7b`"},
		},
		{
			name: "a misspelt model of OpenRouter",
			change: func(t *testing.T, s *setup) []*server {
				or := openRouter(t)
				s.toml += providerTOML("openrouter", or.URL+"/api/v1", `api_key = "`+orKey+`"`)
				s.toml = strings.Replace(s.toml, `fallbacks = ["Qwen/Qwen2.5-72B-Instruct"]`, `fallbacks = ["Qwen/Qwen2.5-72B-Instruct", "openrouter:deepseek/deepseek-r1:fre"]`, 1)
				return []*server{or}
			},
			level:  doctor.Warn,
			has:    []string{"does not list deepseek/deepseek-r1:fre (models[0].fallbacks; did you mean deepseek/deepseek-r1:free?)", `its key sk-or-… (api_key)`},
			hasNot: []string{"ollama pull"},
		},
		{
			name: "its base_url is a web site, not the API",
			change: func(t *testing.T, s *setup) []*server {
				web := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Type", "text/html")
					io.WriteString(w, "<!doctype html><html>welcome</html>")
				}))
				s.toml += providerTOML("openrouter", web.URL, `api_key = "`+orKey+`"`)
				return []*server{web}
			},
			level:    doctor.Fail,
			has:      []string{"openrouter:", "HTML page", "base_url looks wrong", "https://openrouter.ai/api/v1"},
			failures: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSetup(t)
			servers := tt.change(t, s)
			rep, out := s.run(t)
			res, ran := get(rep, doctor.CheckProvider)
			if !ran {
				t.Fatal("no provider line")
			}
			if res.Level != tt.level {
				t.Errorf("level %s, want %s: %s", res.Level, tt.level, res.Msg)
			}
			hasAll(t, res.Msg, tt.has...)
			for _, h := range tt.hasNot {
				if strings.Contains(res.Msg, h) {
					t.Errorf("%q has %q", res.Msg, h)
				}
			}
			if got := rep.Failures(); got != tt.failures {
				t.Errorf("failures = %d, want %d", got, tt.failures)
			}
			// Chutes' own checks are untouched by another provider's
			// models: they are not Chutes ids.
			if ids, _ := get(rep, doctor.CheckModelIDs); ids.Level != doctor.OK {
				t.Errorf("model ids: %s %s", ids.Level, ids.Msg)
			}
			if strings.Contains(out, "providerkey0123") || strings.Contains(out, "wrong-000000") {
				t.Error("the output shows a provider's key")
			}
			// Keys never cross: the provider gets its own key or none,
			// Chutes never gets the provider's.
			for _, srv := range servers {
				for _, a := range srv.authorizations() {
					if strings.Contains(a, "cpk_") {
						t.Errorf("a provider received the Chutes key: %q", a)
					}
				}
			}
			for _, a := range s.fake.allAuths {
				if a != "" && a != "Bearer cpk_0123456789abcdef.0123456789abcdef" {
					t.Errorf("Chutes received Authorization %q", a)
				}
			}
		})
	}
}

// TestDoctorProviderKeys: each provider's probe carries its own key (or no
// Authorization at all), in a run with two providers up and one down.
func TestDoctorProviderKeys(t *testing.T) {
	s := newSetup(t)
	or := openRouter(t)
	local := simServer(t, simulator.Scenario{Seed: 3, AcceptAnyKey: true, Models: []simulator.ModelScenario{{ID: "llama3.1:8b"}}}, "")
	s.toml += providerTOML("openrouter", or.URL+"/api/v1", `api_key = "`+orKey+`"`, "openrouter:deepseek/deepseek-r1:free") +
		providerTOML("local", local.URL+"/v1", "", "local:llama3.1:8b") +
		providerTOML("ollama", closedURL(t)+"/v1", "", "ollama:qwen2.5:7b")
	rep, _ := s.run(t)
	var lines []doctor.Result
	for _, res := range rep.Results {
		if res.Check == doctor.CheckProvider {
			lines = append(lines, res)
		}
	}
	if len(lines) != 3 || !strings.HasPrefix(lines[0].Msg, "openrouter:") || !strings.HasPrefix(lines[1].Msg, "local:") || !strings.HasPrefix(lines[2].Msg, "ollama:") {
		t.Fatalf("provider lines %+v, want one per provider in config order", lines)
	}
	if lines[0].Level != doctor.OK || lines[1].Level != doctor.OK || lines[2].Level != doctor.Fail || rep.Failures() != 1 {
		t.Errorf("levels %s %s %s, %d failures", lines[0].Level, lines[1].Level, lines[2].Level, rep.Failures())
	}
	if got := or.authorizations(); len(got) != 1 || got[0] != "Bearer "+orKey {
		t.Errorf("OpenRouter received %q", got)
	}
	if got := local.authorizations(); len(got) != 1 || got[0] != "" {
		t.Errorf("the local server received %q", got)
	}
	// The order of the run: providers after the model ids, before listen.
	var order []string
	for _, res := range rep.Results {
		order = append(order, res.Check)
	}
	want := []string{doctor.CheckConfig, doctor.CheckKey, doctor.CheckBaseURL, doctor.CheckDNS, doctor.CheckTCP, doctor.CheckTLS, doctor.CheckModels,
		doctor.CheckAccount, doctor.CheckModelIDs, doctor.CheckProvider, doctor.CheckProvider, doctor.CheckProvider, doctor.CheckListen}
	if strings.Join(order, ",") != strings.Join(want, ",") {
		t.Errorf("order %v, want %v", order, want)
	}
}

// hasAll fails the test for each fact text lacks.
func hasAll(t *testing.T, text string, facts ...string) {
	t.Helper()
	for _, f := range facts {
		if !strings.Contains(text, f) {
			t.Errorf("%q lacks %q", text, f)
		}
	}
}
