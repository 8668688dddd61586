package diagnose

import (
	"strings"
	"testing"
)

func TestLocalServer(t *testing.T) {
	tests := []struct {
		name, base, kind, start string
	}{
		{"ollama", "http://127.0.0.1:9999/v1", Ollama, "ollama serve"},
		{"local", "http://localhost:11434/v1", Ollama, "ollama serve"},
		{"local", "http://127.0.0.1:8080/v1", LlamaCpp, "llama-server -m MODEL.gguf --port 8080"},
		{"kobold", "http://127.0.0.1:5001/v1", KoboldCpp, "port 5001"},
		{"lmstudio", "http://127.0.0.1:1234/v1", LMStudio, "lms server start"},
		{"local", "http://127.0.0.1:7000/v1", "", "`llama-server --port 7000`"},
	}
	for _, tt := range tests {
		t.Run(tt.name+" "+tt.base, func(t *testing.T) {
			s := LocalServer(tt.name, tt.base)
			if s.Kind != tt.kind || !strings.Contains(s.Start(), tt.start) {
				t.Errorf("%+v: %q, want kind %q and %q", s, s.Start(), tt.kind, tt.start)
			}
		})
	}
}
